package remote

import (
	"testing"

	"github.com/emersion/go-smtp"

	"minimail/mta/delivery"
	"minimail/mta/remote/smtptest"
)

// TestDeliverDSN_PassedOnToAHopThatOffersDSN: RET, ENVID and each
// recipient's NOTIFY and ORCPT reach a next hop that offers DSN (RFC 3461
// 5.2.1), which the result says; one without DSN gets none of them.
func TestDeliverDSN_PassedOnToAHopThatOffersDSN(t *testing.T) {
	p := delivery.DSN{
		Ret:   smtp.DSNReturnHeaders,
		EnvID: "QQ 314+x",
		Rcpts: []*smtp.RcptOptions{
			{Notify: []smtp.DSNNotify{smtp.DSNNotifySuccess, smtp.DSNNotifyFailure}, OriginalRecipientType: smtp.DSNAddressTypeRFC822, OriginalRecipient: "X+tag@b.test"},
			nil,
		},
	}
	for _, tt := range []struct {
		name  string
		offer bool
	}{{"with DSN", true}, {"without DSN", false}} {
		t.Run(tt.name, func(t *testing.T) {
			srv := smtptest.Start(t, smtptest.Options{DSN: tt.offer})
			res, offered := routed(srv).DeliverDSN(t.Context(), "bob@a.test", []string{"x@b.test", "y@b.test"}, []byte(testMsg), p)
			if res[0] != nil || res[1] != nil || offered != tt.offer {
				t.Fatalf("results %v, offered %v", res, offered)
			}
			m := srv.Wait(t)
			if !tt.offer {
				if m.MailOpts.Return != "" || m.MailOpts.EnvelopeID != "" || len(m.RcptOpts[0].Notify) != 0 || m.RcptOpts[0].OriginalRecipient != "" {
					t.Fatalf("DSN parameters sent to a hop without DSN: %+v %+v", m.MailOpts, m.RcptOpts)
				}
				return
			}
			if m.MailOpts.Return != smtp.DSNReturnHeaders || m.MailOpts.EnvelopeID != "QQ 314+x" {
				t.Errorf("MAIL parameters %+v", m.MailOpts)
			}
			r := m.RcptOpts[0]
			if len(r.Notify) != 2 || r.Notify[0] != smtp.DSNNotifySuccess || r.Notify[1] != smtp.DSNNotifyFailure ||
				r.OriginalRecipientType != smtp.DSNAddressTypeRFC822 || r.OriginalRecipient != "X+tag@b.test" {
				t.Errorf("first RCPT parameters %+v", r)
			}
			if r := m.RcptOpts[1]; len(r.Notify) != 0 || r.OriginalRecipient != "" {
				t.Errorf("second RCPT got parameters it never had: %+v", r)
			}
		})
	}
}
