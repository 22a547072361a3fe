package resolve

import (
	"testing"

	"github.com/miekg/dns"
)

// FuzzTXTAnswer feeds the reader of kept answers arbitrary octets: what a
// DNS server sent is read by it on every hit. It must never panic, and a
// hit without an error has records.
func FuzzTXTAnswer(f *testing.F) {
	for _, m := range seedAnswers(f) {
		f.Add(m)
	}
	f.Fuzz(func(t *testing.T, wire []byte) {
		txts, hit, err := txtAnswer(wire, "a.test.")
		if !hit && (txts != nil || err != nil) {
			t.Fatalf("no hit, but %q, %v", txts, err)
		}
		if hit && err == nil && len(txts) == 0 {
			t.Fatal("a hit without records nor error")
		}
	})
}

func seedAnswers(f *testing.F) [][]byte {
	var out [][]byte
	for _, rrs := range [][]string{
		{`a.test. 300 IN TXT "v=spf1 " "-all"`},
		{`a.test. 300 IN TXT "one"`, `a.test. 300 IN TXT "two"`},
		{"a.test. 300 IN CNAME b.test.", `b.test. 300 IN TXT "through"`},
		{"a.test. 300 IN MX 10 mx.test."},
		nil,
	} {
		m := new(dns.Msg)
		m.SetQuestion("a.test.", dns.TypeTXT)
		m.Response = true
		for _, s := range rrs {
			rr, err := dns.NewRR(s)
			if err != nil {
				f.Fatal(err)
			}
			m.Answer = append(m.Answer, rr)
		}
		if rrs == nil {
			m.Rcode = dns.RcodeNameError
		}
		wire, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, wire, wire[:len(wire)/2])
	}
	return out
}
