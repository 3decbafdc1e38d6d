package power

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The drivers a Config can name.
const (
	DriverNone    = "none"
	DriverIPMI    = "ipmi"
	DriverRedfish = "redfish"
)

// Drivers lists the accepted Config.Driver values.
var Drivers = []string{DriverNone, DriverIPMI, DriverRedfish}

// DefaultIPMIPort is the RMCP+ port an IPMI address without one uses.
const DefaultIPMIPort = 623

// maxField is the longest string field a Config accepts, in bytes.
const maxField = 255

// redacted replaces the password wherever a Config is printed or logged.
const redacted = "[redacted]"

// Config says how to reach one machine's BMC. The zero Config is invalid
// (no driver); a machine without a BMC has Driver "none".
type Config struct {
	// Driver is "none", "ipmi" or "redfish".
	Driver string
	// Address is, for ipmi, host[:port] (port 623 when left out; an IPv6
	// host with a port is written [::1]:623); for redfish, the BMC's base
	// URL, https://bmc or http://bmc:8000, without a path beyond "/".
	Address string
	// Username and Password are the BMC account's credentials. Password
	// never appears in String, LogValue or an error.
	Username string
	Password string
	// CipherSuite is the IPMI lanplus cipher suite (1-19, typically 3 or
	// 17); 0 lets the library pick the strongest the BMC offers.
	CipherSuite int
	// System picks the Redfish ComputerSystem, by its @odata.id
	// (/redfish/v1/Systems/1) or Id (1), when the Systems collection has
	// several; empty means the only one.
	System string
	// Insecure skips verifying the Redfish BMC's TLS certificate: for
	// BMCs with self-signed certificates, only when the operator asks.
	Insecure bool
}

// FieldError is one Config field the caller must fix: Field is the
// field's name in lower snake case ("cipher_suite"), Msg what is wrong
// and what to do. A form shows Msg next to the field.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Validate returns every problem with c, nil when it is usable by New.
func (c Config) Validate() []FieldError {
	var errs []FieldError
	add := func(field, format string, a ...any) {
		errs = append(errs, FieldError{Field: field, Msg: fmt.Sprintf(format, a...)})
	}
	// Bounds first: the checks below quote values, and a quoted value in
	// a message must itself be short and one line.
	for _, f := range []struct{ name, v string }{
		{"driver", c.Driver}, {"address", c.Address}, {"username", c.Username}, {"system", c.System},
	} {
		if msg := fieldBounds(f.v); msg != "" {
			add(f.name, "%s", msg)
		}
	}
	if msg := fieldBounds(c.Password); msg != "" {
		add("password", "%s", msg)
	}
	if len(errs) > 0 {
		return errs
	}

	switch c.Driver {
	case DriverNone:
		return nil
	case DriverIPMI:
		if c.Address == "" {
			add("address", "required for the ipmi driver: the BMC's host or host:port, e.g. 10.0.0.5 or bmc1.example:623")
		} else if _, _, err := ipmiHostPort(c.Address); err != nil {
			add("address", "%s", err.Error())
		}
		if c.CipherSuite < 0 || c.CipherSuite > 19 {
			add("cipher_suite", "%d is not an IPMI lanplus cipher suite: use 0 (let the library pick) or 1-19, typically 3 or 17", c.CipherSuite)
		}
		if c.System != "" {
			add("system", "only the redfish driver uses a system: leave it empty for ipmi")
		}
		if c.Insecure {
			add("insecure", "only the redfish driver uses TLS: leave it off for ipmi")
		}
	case DriverRedfish:
		if c.Address == "" {
			add("address", "required for the redfish driver: the BMC's base URL, e.g. https://bmc1.example")
		} else if _, err := redfishBase(c.Address); err != nil {
			add("address", "%s", err.Error())
		}
		if c.CipherSuite != 0 {
			add("cipher_suite", "only the ipmi driver uses a cipher suite: leave it 0 for redfish")
		}
	case "":
		add("driver", "required: one of %s (none for a machine without a BMC)", strings.Join(Drivers, ", "))
		return errs
	default:
		add("driver", "%q is not one of %s", scrub(c.Driver, c.Password), strings.Join(Drivers, ", "))
		return errs
	}
	if c.Username == "" {
		add("username", "required for the %s driver: the BMC account's user name", c.Driver)
	}
	if c.Password == "" {
		add("password", "required for the %s driver: the BMC account's password", c.Driver)
	}
	return errs
}

// Err is Validate as one error (nil when c is valid), joining the field
// errors; errors.As finds the first *FieldError.
func (c Config) Err() error {
	fe := c.Validate()
	if len(fe) == 0 {
		return nil
	}
	errs := make([]error, len(fe))
	for i := range fe {
		errs[i] = &fe[i]
	}
	return fmt.Errorf("power settings: %w", errors.Join(errs...))
}

// fieldBounds says what is wrong with a string field's size or shape,
// or "" when it is within bounds. It never quotes the value.
func fieldBounds(v string) string {
	switch {
	case len(v) > maxField:
		return fmt.Sprintf("longer than %d bytes: shorten it", maxField)
	case !utf8.ValidString(v):
		return "not valid UTF-8: retype it"
	case strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return "contains a line break or control character: use one line of printable text"
	}
	return ""
}

// Address errors never quote the address: an operator may have pasted
// user:password@host into it.

// ipmiHostPort splits an IPMI address into host and port (623 when none).
func ipmiHostPort(addr string) (string, int, error) {
	host, port := addr, DefaultIPMIPort
	if h, p, err := net.SplitHostPort(addr); err == nil {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return "", 0, errors.New("the port is not a number from 1 to 65535: write host or host:port, e.g. 10.0.0.5:623")
		}
		host, port = h, n
	} else if strings.Count(addr, ":") == 1 || strings.HasPrefix(addr, "[") {
		return "", 0, errors.New("not host or host:port: write e.g. 10.0.0.5, 10.0.0.5:623 or [fd00::5]:623")
	}
	if host == "" {
		return "", 0, errors.New("no host: write e.g. 10.0.0.5 or 10.0.0.5:623")
	}
	if strings.ContainsAny(host, "/?#@ ") {
		return "", 0, errors.New("not a host name or IP address: write host or host:port, without a scheme, user or path")
	}
	return host, port, nil
}

// redfishBase parses a Redfish base URL: http or https, a host, an
// optional valid port, no credentials, query or fragment, and no path
// beyond "/". The result has no trailing slash.
func redfishBase(addr string) (*url.URL, error) {
	u, err := url.Parse(addr)
	if err != nil {
		return nil, errors.New("not a URL: write the BMC's base URL, e.g. https://bmc1.example")
	}
	switch {
	case u.Scheme != "https" && u.Scheme != "http":
		return nil, errors.New("not an http or https URL: write the BMC's base URL, e.g. https://bmc1.example")
	case u.User != nil:
		return nil, errors.New("has credentials in it: remove them from the URL and set username and password instead")
	case u.Host == "" || u.Hostname() == "":
		return nil, errors.New("has no host: write the BMC's base URL, e.g. https://bmc1.example")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return nil, errors.New("has a query or fragment: write only the BMC's base URL, e.g. https://bmc1.example")
	case u.Path != "" && u.Path != "/":
		return nil, errors.New("has a path: write only the BMC's base URL (bty adds /redfish/v1), e.g. https://bmc1.example")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, errors.New("the port is not a number from 1 to 65535: write e.g. https://bmc1.example:8443")
		}
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}

// Redacted returns c with the password replaced by "[redacted]" (left
// empty when it was empty), also where it was pasted into another field:
// the form to print, log or send to a browser.
func (c Config) Redacted() Config {
	if c.Password == "" {
		return c
	}
	c.Address = scrub(c.Address, c.Password)
	c.Username = scrub(c.Username, c.Password)
	c.System = scrub(c.System, c.Password)
	c.Driver = scrub(c.Driver, c.Password)
	c.Password = redacted
	return c
}

// scrub replaces every occurrence of secret in s with "[redacted]".
func scrub(s, secret string) string {
	if secret == "" {
		return s
	}
	return strings.ReplaceAll(s, secret, redacted)
}

// String prints c on one line with the password redacted.
func (c Config) String() string {
	r := c.Redacted()
	s := fmt.Sprintf("driver=%s address=%q username=%q password=%s", r.Driver, r.Address, r.Username, r.Password)
	if r.Password == "" {
		s = fmt.Sprintf("driver=%s address=%q username=%q password=", r.Driver, r.Address, r.Username)
	}
	if r.CipherSuite != 0 {
		s += fmt.Sprintf(" cipher_suite=%d", r.CipherSuite)
	}
	if r.System != "" {
		s += fmt.Sprintf(" system=%q", r.System)
	}
	if r.Insecure {
		s += " insecure=true"
	}
	return s
}

// GoString is String, so %#v cannot print the password either.
func (c Config) GoString() string { return "power.Config{" + c.String() + "}" }

// LogValue makes slog log c as a group without the password.
func (c Config) LogValue() slog.Value {
	r := c.Redacted()
	attrs := []slog.Attr{
		slog.String("driver", r.Driver),
		slog.String("address", r.Address),
		slog.String("username", r.Username),
		slog.String("password", r.Password),
	}
	if r.CipherSuite != 0 {
		attrs = append(attrs, slog.Int("cipher_suite", r.CipherSuite))
	}
	if r.System != "" {
		attrs = append(attrs, slog.String("system", r.System))
	}
	if r.Insecure {
		attrs = append(attrs, slog.Bool("insecure", true))
	}
	return slog.GroupValue(attrs...)
}

var _ slog.LogValuer = Config{}
var _ fmt.Stringer = Config{}
var _ fmt.GoStringer = Config{}
