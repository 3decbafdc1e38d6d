package server

import (
	"bytes"
	"net/url"
	"strings"

	"github.com/btyproject/bty/internal/netboot"
)

// renderScript renders p's script; a message (server-made text) is
// echoed on the console first, reduced to characters iPXE prints as they
// are.
func renderScript(p netboot.Params, message string) ([]byte, error) {
	script, err := netboot.Script(p)
	if err != nil || message == "" {
		return script, err
	}
	msg := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(" :.,()-_/", r) {
			return r
		}
		return -1
	}, message)
	first, rest, _ := bytes.Cut(script, []byte("\n"))
	var b bytes.Buffer
	b.Write(first)
	b.WriteString("\necho " + msg + "\n")
	b.Write(rest)
	return b.Bytes(), nil
}

func renderBootstrap(serverURL string) ([]byte, error) { return netboot.Bootstrap(serverURL) }

// imageURL is where the live env downloads an image from.
func imageURL(base, name string) string { return base + "/images/" + url.PathEscape(name) }
