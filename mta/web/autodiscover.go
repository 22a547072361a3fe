package web

import (
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"net/http"
	"strings"

	"minimail/mta/mailaddr"
)

// The POX autodiscover schemas (MS-OXDSCLI): Outlook posts a request in
// the request schema and takes a response whose Response element is in the
// "outlook" response schema it named as acceptable.
const (
	requestSchema         = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
	responseSchema        = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
	outlookResponseSchema = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
)

// AutodiscoverRequest is the body Outlook posts.
type AutodiscoverRequest struct {
	XMLName xml.Name `xml:"http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006 Autodiscover"`
	Request struct {
		EMailAddress             string `xml:"EMailAddress"`
		AcceptableResponseSchema string `xml:"AcceptableResponseSchema"`
	} `xml:"Request"`
}

// AutodiscoverResponse is the answer; tests parse answers back into it.
type AutodiscoverResponse struct {
	XMLName  xml.Name        `xml:"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006 Autodiscover"`
	Response OutlookResponse `xml:"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a Response"`
}

// OutlookResponse is the response in the outlook schema.
type OutlookResponse struct {
	Account Account `xml:"Account"`
}

// Account lists the servers, one Protocol for each of POP3 and SMTP.
type Account struct {
	AccountType string     `xml:"AccountType"` // email
	Action      string     `xml:"Action"`      // settings
	Protocols   []Protocol `xml:"Protocol"`
}

// Protocol is one server. SSL on is implicit TLS; SSL off with Encryption
// TLS is STARTTLS.
type Protocol struct {
	Type           string `xml:"Type"` // POP3, SMTP
	Server         string `xml:"Server"`
	Port           int    `xml:"Port"`
	LoginName      string `xml:"LoginName"`
	DomainRequired string `xml:"DomainRequired"`
	SPA            string `xml:"SPA"` // Microsoft's NTLM logins: off, the password is sent in TLS
	SSL            string `xml:"SSL"`
	Encryption     string `xml:"Encryption,omitempty"`
	AuthRequired   string `xml:"AuthRequired"`
}

// protocols are the Protocol blocks for login: one for POP3 and one for
// SMTP, each implicit TLS when that listener is on (Outlook takes the first
// block of a type), else STARTTLS.
func (h *Handler) protocols(login string) []Protocol {
	p := h.opts.Ports
	block := func(typ string, port int, implicit bool) Protocol {
		pr := Protocol{Type: typ, Server: h.opts.Hostname, Port: port, LoginName: login,
			DomainRequired: "off", SPA: "off", SSL: "on", AuthRequired: "on"}
		if !implicit {
			pr.SSL, pr.Encryption = "off", "TLS"
		}
		return pr
	}
	var out []Protocol
	switch {
	case p.POP3S != 0:
		out = append(out, block("POP3", p.POP3S, true))
	case p.POP3 != 0:
		out = append(out, block("POP3", p.POP3, false))
	}
	switch {
	case p.Submissions != 0:
		out = append(out, block("SMTP", p.Submissions, true))
	case p.Submission != 0:
		out = append(out, block("SMTP", p.Submission, false))
	}
	return out
}

func (h *Handler) autodiscoverXML(w http.ResponseWriter, r *http.Request) {
	// The whole body is read first, so that one over the limit is refused
	// whatever follows the root element.
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opts.MaxRequestBytes))
	if tooBig := (*http.MaxBytesError)(nil); errors.As(err, &tooBig) {
		http.Error(w, "request too large", http.StatusRequestEntityTooLarge)
		return
	}
	if err != nil {
		http.Error(w, "request body unreadable", http.StatusBadRequest)
		return
	}
	addr, err := ParseAutodiscoverRequest(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	writeXML(w, AutodiscoverResponse{Response: OutlookResponse{Account: Account{
		AccountType: "email", Action: "settings", Protocols: h.protocols(addr),
	}}})
}

// ParseAutodiscoverRequest reads a POX request and returns the address it
// asks for.
func ParseAutodiscoverRequest(body []byte) (string, error) {
	var req AutodiscoverRequest
	if err := xml.Unmarshal(body, &req); err != nil {
		return "", errors.New("not an autodiscover request")
	}
	addr := strings.TrimSpace(req.Request.EMailAddress)
	if !validAddress(addr) {
		return "", errors.New("EMailAddress is not an address")
	}
	if s := strings.TrimSpace(req.Request.AcceptableResponseSchema); s != "" && s != outlookResponseSchema {
		return "", errors.New("only the outlook response schema is offered")
	}
	return addr, nil
}

// validAddress accepts local@domain with a domain the server could hold;
// whether it exists is not asked.
func validAddress(addr string) bool {
	local, domain, ok := strings.Cut(addr, "@")
	return ok && local != "" && len(addr) <= 254 && !strings.ContainsAny(addr, " \t\r\n<>") && mailaddr.ValidDomain(domain)
}

// AutodiscoverRedirect is the JSON answer new Outlook asks for before the
// POX request: where that request goes.
type AutodiscoverRedirect struct {
	Protocol string `json:"Protocol"`
	URL      string `json:"Url"`
}

// autodiscoverV1 is the only Protocol the JSON endpoint answers for:
// Exchange's ActiveSync and EWS are not offered.
const autodiscoverV1 = "AutodiscoverV1"

// autodiscoverJSON answers both forms Outlook uses,
// /autodiscover/autodiscover.json?Email=ADDR&Protocol=AutodiscoverV1 and
// /autodiscover/autodiscover.json/v1.0/ADDR?Protocol=AutodiscoverV1.
func (h *Handler) autodiscoverJSON(w http.ResponseWriter, r *http.Request, domain string) {
	protocol := ""
	for k, v := range r.URL.Query() {
		if strings.EqualFold(k, "Protocol") && len(v) > 0 {
			protocol = v[0]
		}
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	if !strings.EqualFold(protocol, autodiscoverV1) {
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]string{
			"ErrorCode":    "InvalidProtocol",
			"ErrorMessage": "The given protocol value is invalid. Supported values are '" + autodiscoverV1 + "'.",
		})
		return
	}
	json.NewEncoder(w).Encode(AutodiscoverRedirect{
		Protocol: autodiscoverV1,
		URL:      "https://autodiscover." + domain + "/autodiscover/autodiscover.xml",
	})
}
