package delivery_test

import (
	"errors"
	"fmt"
	"testing"

	"minimail/mta/delivery"
)

type verdict bool

func (v verdict) Error() string   { return fmt.Sprintf("temporary=%v", bool(v)) }
func (v verdict) Temporary() bool { return bool(v) }

func TestTemporary(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"no error is no failure", nil, false},
		{"an error without a verdict is temporary", errors.New("disk trouble"), true},
		{"a temporary verdict", verdict(true), true},
		{"a permanent verdict", verdict(false), false},
		{"a wrapped permanent verdict", fmt.Errorf("deliver: %w", verdict(false)), false},
		{"the outermost verdict decides", fmt.Errorf("%w: %w", verdict(true), verdict(false)), true},
	} {
		if got := delivery.Temporary(tt.err); got != tt.want {
			t.Errorf("%s: Temporary(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}
