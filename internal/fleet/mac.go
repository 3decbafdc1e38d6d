package fleet

import "fmt"

// MAC is a machine's key: a 6-byte Ethernet address, always held in its
// one stored form, lower case with colons (aa:bb:cc:dd:ee:ff). The only
// ways to make one are ParseMAC (and MustParseMAC for constants), so a
// MAC value is valid wherever it travels; parse where it enters (a URL
// path, a flag, a kernel parameter, a JSON body) and pass the MAC.
// The zero MAC is "no MAC" (IsZero).
type MAC struct{ s string }

// ParseMAC accepts six two-digit hex octets in any case separated by
// ':' or '-' (one separator throughout): the forms docs/reference.md
// names, and what iPXE's ${net0/mac} and ${net0/mac:hexhyp} produce.
//
// Hand-written rather than net.ParseMAC: that also accepts 8- and 20-byte
// addresses and the dotted Cisco form, which are not machine keys here.
func ParseMAC(s string) (MAC, error) {
	if len(s) != 17 {
		return MAC{}, macError(s)
	}
	sep := s[2]
	if sep != ':' && sep != '-' {
		return MAC{}, macError(s)
	}
	var b [17]byte
	for i := 0; i < 17; i++ {
		c := s[i]
		if i%3 == 2 {
			if c != sep {
				return MAC{}, macError(s)
			}
			b[i] = ':'
			continue
		}
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
			b[i] = c
		case c >= 'A' && c <= 'F':
			b[i] = c + ('a' - 'A')
		default:
			return MAC{}, macError(s)
		}
	}
	return MAC{string(b[:])}, nil
}

// MustParseMAC is ParseMAC for constants (tests, examples); it panics
// on a malformed address.
func MustParseMAC(s string) MAC {
	m, err := ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func macError(s string) error {
	return &ValidationError{
		Field: "mac",
		Msg: fmt.Sprintf("invalid MAC address %q: expected six two-digit hex octets separated by ':' or '-', "+
			"e.g. aa:bb:cc:dd:ee:ff or AA-BB-CC-DD-EE-FF", s),
	}
}

// String is the stored form, aa:bb:cc:dd:ee:ff ("" for the zero MAC).
func (m MAC) String() string { return m.s }

// IsZero reports whether m is the zero MAC (none).
func (m MAC) IsZero() bool { return m.s == "" }

// Hex is the address without separators (aabbccddeeff), for searching.
func (m MAC) Hex() string {
	if m.s == "" {
		return ""
	}
	b := make([]byte, 0, 12)
	for i := 0; i < len(m.s); i += 3 {
		b = append(b, m.s[i], m.s[i+1])
	}
	return string(b)
}

// MarshalText writes the stored form; JSON carries a MAC as a string.
func (m MAC) MarshalText() ([]byte, error) { return []byte(m.s), nil }

// UnmarshalText parses any form ParseMAC accepts; an empty text is the
// zero MAC.
func (m *MAC) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*m = MAC{}
		return nil
	}
	v, err := ParseMAC(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// Equal reports whether m and o are the same address (go-cmp uses it).
func (m MAC) Equal(o MAC) bool { return m == o }
