// Package web is minimail's HTTPS side: what mail clients and sending
// servers fetch over HTTPS to find and trust the mail server, for every
// local domain, chosen by the request's Host (the domain itself, or
// autoconfig., autodiscover. or mta-sts. in front of it):
//
//   - Thunderbird autoconfig, the clientConfig version 1.1 format
//     (https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat),
//     at /mail/config-v1.1.xml and /.well-known/autoconfig/mail/config-v1.1.xml;
//   - Outlook autodiscover: the POX request and response schemas (MS-OXDSCLI)
//     at POST /autodiscover/autodiscover.xml, and the JSON redirect new
//     Outlook asks for first at GET /autodiscover/autodiscover.json;
//   - the MTA-STS policy (RFC 8461 section 3.2) at /.well-known/mta-sts.txt.
//
// Everything else is 404, also for a Host that names no local domain. No
// answer depends on whether an address exists: the user name is the address
// the client asked with (or Thunderbird's %EMAILADDRESS%), so nothing here
// tells who has a mailbox.
//
// The package knows no store and no config file: Options carries the host
// name, the domains and the ports of the listeners that are on.
package web

import (
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"
)

// Ports are the mail listeners' ports; 0 is a listener that is off, which
// the answers leave out.
type Ports struct {
	POP3S       int // implicit TLS (RFC 8314), 995
	POP3        int // STLS (RFC 2595), 110
	Submissions int // implicit TLS (RFC 8314), 465
	Submission  int // STARTTLS (RFC 6409), 587
}

// Options are what the handler answers with.
type Options struct {
	// Hostname is the mail server's name: the server in every answer and
	// the mx: of the MTA-STS policy.
	Hostname string
	// Domains are the local domains (lower case, no trailing dot).
	Domains []string
	Ports   Ports
	Policy  Policy
	// MaxRequestBytes bounds an autodiscover request body; 0 means
	// DefaultMaxRequestBytes.
	MaxRequestBytes int64
	Logger          *slog.Logger
}

// DefaultMaxRequestBytes is the largest autodiscover request read: Outlook's
// is about 400 bytes.
const DefaultMaxRequestBytes = 16 << 10

// Handler answers the requests of the package doc.
type Handler struct {
	opts    Options
	domains map[string]bool
}

// NewHandler returns the handler for opts.
func NewHandler(opts Options) *Handler {
	if opts.MaxRequestBytes <= 0 {
		opts.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{opts: opts, domains: map[string]bool{}}
	for _, d := range opts.Domains {
		h.domains[strings.ToLower(strings.TrimSuffix(d, "."))] = true
	}
	return h
}

// HostPrefixes are the names clients and senders look the services up
// under, in front of a local domain: the certificate of listen.https must
// name them.
var HostPrefixes = []string{"autoconfig.", "autodiscover.", "mta-sts."}

// domainOf is the local domain a Host header names, or "": the name is
// compared without port, trailing dot and case, and may carry one of
// hostPrefixes.
func (h *Handler) domainOf(host string) string {
	if hp, _, err := net.SplitHostPort(host); err == nil {
		host = hp
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if h.domains[host] {
		return host
	}
	for _, p := range HostPrefixes {
		if d, ok := strings.CutPrefix(host, p); ok && h.domains[d] {
			return d
		}
	}
	return ""
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	domain := h.domainOf(r.Host)
	if domain == "" {
		http.NotFound(w, r)
		return
	}
	// Outlook has been seen to capitalise the autodiscover paths.
	path := strings.ToLower(r.URL.Path)
	var what string
	switch {
	case path == "/mail/config-v1.1.xml" || path == "/.well-known/autoconfig/mail/config-v1.1.xml":
		what = "autoconfig"
		h.onlyGet(w, r, h.autoconfig)
	case path == "/autodiscover/autodiscover.xml":
		what = "autodiscover"
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			break
		}
		h.autodiscoverXML(w, r)
	case path == "/autodiscover/autodiscover.json" || strings.HasPrefix(path, "/autodiscover/autodiscover.json/"):
		what = "autodiscover.json"
		h.onlyGet(w, r, func(w http.ResponseWriter, r *http.Request) { h.autodiscoverJSON(w, r, domain) })
	case path == "/.well-known/mta-sts.txt":
		what = "mta-sts"
		h.onlyGet(w, r, h.mtaSTS)
	default:
		http.NotFound(w, r)
		return
	}
	// One line per request for what is served; 404s (scanners) are not
	// logged, nor the address a client asked about.
	h.opts.Logger.Info("https request", "what", what, "method", r.Method, "host", r.Host, "remote", r.RemoteAddr)
}

// onlyGet runs serve for GET and HEAD, and refuses other methods.
func (h *Handler) onlyGet(w http.ResponseWriter, r *http.Request, serve http.HandlerFunc) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	serve(w, r)
}

// ServerLimits bound each HTTPS connection; the zero value takes the
// defaults of NewServer.
type ServerLimits struct {
	ReadHeaderTimeout time.Duration // the TLS handshake and the request head
	ReadTimeout       time.Duration // the whole request
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration // between requests on a kept-alive connection
	MaxHeaderBytes    int
}

// NewServer is the net/http server for h, with every limit set: without
// them net/http waits for a slow client forever.
func NewServer(h http.Handler, limits ServerLimits, log *slog.Logger) *http.Server {
	or := func(d, def time.Duration) time.Duration {
		if d <= 0 {
			return def
		}
		return d
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	maxHeader := limits.MaxHeaderBytes
	if maxHeader <= 0 {
		maxHeader = 16 << 10
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: or(limits.ReadHeaderTimeout, 10*time.Second),
		ReadTimeout:       or(limits.ReadTimeout, 30*time.Second),
		WriteTimeout:      or(limits.WriteTimeout, 30*time.Second),
		IdleTimeout:       or(limits.IdleTimeout, 60*time.Second),
		MaxHeaderBytes:    maxHeader,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}
