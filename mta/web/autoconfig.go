package web

import (
	"encoding/xml"
	"net/http"
	"strconv"
)

// ClientConfig is Thunderbird's autoconfig document, clientConfig version
// 1.1 (https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat).
// Tests parse answers back into it.
type ClientConfig struct {
	XMLName  xml.Name      `xml:"clientConfig"`
	Version  string        `xml:"version,attr"`
	Provider EmailProvider `xml:"emailProvider"`
}

// EmailProvider is the one provider of a ClientConfig.
type EmailProvider struct {
	ID               string   `xml:"id,attr"`
	Domain           string   `xml:"domain"`
	DisplayName      string   `xml:"displayName"`
	DisplayShortName string   `xml:"displayShortName"`
	Incoming         []Server `xml:"incomingServer"`
	Outgoing         []Server `xml:"outgoingServer"`
}

// Server is one incomingServer or outgoingServer: the first that works is
// the one Thunderbird keeps, so the implicit TLS ports come first (RFC 8314
// section 3 prefers them).
type Server struct {
	Type           string `xml:"type,attr"` // pop3, smtp
	Hostname       string `xml:"hostname"`
	Port           int    `xml:"port"`
	SocketType     string `xml:"socketType"` // SSL (implicit TLS), STARTTLS
	Username       string `xml:"username"`
	Authentication string `xml:"authentication"`
}

// emailAddressPlaceholder is what Thunderbird replaces with the address the
// user typed: the login name is the full address.
const emailAddressPlaceholder = "%EMAILADDRESS%"

// clientConfig is the document for domain. The emailaddress query
// parameter Thunderbird sends is not looked at: the answer is the same for
// every address, existing or not.
func (h *Handler) clientConfig(domain string) ClientConfig {
	server := func(typ string, port int, socket string) Server {
		return Server{Type: typ, Hostname: h.opts.Hostname, Port: port, SocketType: socket,
			Username: emailAddressPlaceholder, Authentication: "password-cleartext"}
	}
	p := h.opts.Ports
	var in, out []Server
	if p.POP3S != 0 {
		in = append(in, server("pop3", p.POP3S, "SSL"))
	}
	if p.POP3 != 0 {
		in = append(in, server("pop3", p.POP3, "STARTTLS"))
	}
	if p.Submissions != 0 {
		out = append(out, server("smtp", p.Submissions, "SSL"))
	}
	if p.Submission != 0 {
		out = append(out, server("smtp", p.Submission, "STARTTLS"))
	}
	return ClientConfig{Version: "1.1", Provider: EmailProvider{
		ID: domain, Domain: domain, DisplayName: domain, DisplayShortName: domain,
		Incoming: in, Outgoing: out,
	}}
}

func (h *Handler) autoconfig(w http.ResponseWriter, r *http.Request) {
	domain := h.domainOf(r.Host)
	writeXML(w, h.clientConfig(domain))
}

// writeXML answers 200 with v as an XML document.
func writeXML(w http.ResponseWriter, v any) {
	body, err := xml.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	body = append([]byte(xml.Header), append(body, '\n')...)
	w.Header().Set("Content-Type", "application/xml; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Write(body)
}
