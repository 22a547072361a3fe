package store

import (
	"reflect"
	"testing"
	"time"
)

// FuzzDecodeEvent feeds the trace event decoder what a damaged file could
// hold: it returns an event or an error, never panics, and an event it
// returns encodes to a record that decodes to the same event. The seed
// corpus (testdata/fuzz/FuzzDecodeEvent) holds good records and damaged
// ones (short, trailing bytes, huge lengths, unknown version).
func FuzzDecodeEvent(f *testing.F) {
	f.Add(encodeEvent(Event{Time: time.Unix(1, 0), Kind: EventReceived, ID: "00ff", Facts: []Fact{{FactRcpt, "a@b"}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeEvent(b)
		if err != nil {
			return
		}
		again, err := decodeEvent(encodeEvent(e))
		if err != nil {
			t.Fatalf("re-encoded event does not decode: %v", err)
		}
		if !again.Time.Equal(e.Time) || again.Kind != e.Kind || again.ID != e.ID || !reflect.DeepEqual(again.Facts, e.Facts) {
			t.Fatalf("round trip changed %+v into %+v", e, again)
		}
	})
}

func TestEventRecordRoundTrip(t *testing.T) {
	long := make([]byte, maxEventString+10)
	for i := range long {
		long[i] = 'x'
	}
	tests := []struct {
		name string
		in   Event
		want Event
	}{
		{"plain", Event{Time: time.Unix(5, 7).UTC(), Kind: "sent", ID: "abc", Facts: []Fact{{"reply", "250 ok"}}},
			Event{Time: time.Unix(5, 7).UTC(), Kind: "sent", ID: "abc", Facts: []Fact{{"reply", "250 ok"}}}},
		{"long value is cut", Event{Time: time.Unix(0, 0).UTC(), Kind: "k", ID: "i", Facts: []Fact{{"v", string(long)}}},
			Event{Time: time.Unix(0, 0).UTC(), Kind: "k", ID: "i", Facts: []Fact{{"v", string(long[:maxEventString])}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeEvent(encodeEvent(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
	for _, bad := range [][]byte{nil, {2}, {1}, append(encodeEvent(tests[0].in), 0), {1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}} {
		if _, err := decodeEvent(bad); err == nil {
			t.Errorf("decodeEvent(%x) = nil error, want one", bad)
		}
	}
}
