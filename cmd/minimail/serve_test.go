package main

import (
	"testing"

	"minimail/mta"
	"minimail/mta/msgauth"
)

// TestMXDisposition_OneForEachVerdict: each of msgauth's verdicts reaches
// the MX as its own disposition, which TestMX_VerifyHook (package mta)
// turns into the reply.
func TestMXDisposition_OneForEachVerdict(t *testing.T) {
	for in, want := range map[msgauth.Disposition]mta.Disposition{
		msgauth.Deliver:           mta.Accept,
		msgauth.RejectMalformed:   mta.RejectMalformed,
		msgauth.RejectUnevaluable: mta.RejectUnevaluable,
		msgauth.RejectPolicy:      mta.RejectPolicy,
		msgauth.Temporary:         mta.Defer,
		msgauth.Temporary + 1:     mta.Defer,
	} {
		if got := mxDisposition(in); got != want {
			t.Errorf("mxDisposition(%d) = %d, want %d", in, got, want)
		}
	}
}
