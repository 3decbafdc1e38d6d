package store

import (
	"fmt"
)

// NormalizeMAC returns s as a lower-case, colon-separated MAC address
// (aa:bb:cc:dd:ee:ff). It accepts six two-digit hex octets in any case
// separated by ':' or '-' (one separator throughout), the forms docs/reference.md
// names and iPXE's ${net0/mac} and ${net0/mac:hexhyp} produce.
//
// Hand-written rather than net.ParseMAC: that also accepts 8- and 20-byte
// addresses and the dotted Cisco form, which are not machine keys here.
func NormalizeMAC(s string) (string, error) {
	if len(s) != 17 {
		return "", macError(s)
	}
	sep := s[2]
	if sep != ':' && sep != '-' {
		return "", macError(s)
	}
	var b [17]byte
	for i := 0; i < 17; i++ {
		c := s[i]
		if i%3 == 2 {
			if c != sep {
				return "", macError(s)
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
			return "", macError(s)
		}
	}
	return string(b[:]), nil
}

func macError(s string) error {
	return &ValidationError{
		Field: "mac",
		Msg: fmt.Sprintf("invalid MAC address %q: expected six two-digit hex octets separated by ':' or '-', "+
			"e.g. aa:bb:cc:dd:ee:ff or AA-BB-CC-DD-EE-FF", s),
	}
}

// CheckMAC refuses a MAC that is not already in the stored form, so a
// caller that forgot NormalizeMAC gets an error rather than a second
// record for the same machine.
func CheckMAC(mac string) error {
	n, err := NormalizeMAC(mac)
	if err != nil {
		return err
	}
	if n != mac {
		return &ValidationError{
			Field: "mac",
			Msg:   fmt.Sprintf("MAC address %q is not normalized (want %q): call NormalizeMAC first", mac, n),
		}
	}
	return nil
}
