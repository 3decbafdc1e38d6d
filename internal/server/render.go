package server

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// scriptParams are what an iPXE script needs.
type scriptParams struct {
	ServerURL    string
	MAC          string
	ImageURL     string
	ImageSHA256  string
	Provisioning string
	Hostname     string
	// Message is echoed on the console before the script acts.
	Message string
}

// renderScript and renderBootstrap are placeholders until netboot lands.
func renderScript(policy string, p scriptParams) ([]byte, error) {
	return []byte(fmt.Sprintf("#!ipxe\necho %s %s\n", policy, p.MAC)), nil
}

func renderBootstrap(serverURL string) ([]byte, error) {
	return []byte("#!ipxe\nchain " + serverURL + "/pxe/${net0/mac:hexhyp}\n"), nil
}

func (s *Server) startPXEServices(ctx context.Context, reg *prometheus.Registry) error { return nil }
func (s *Server) stopPXEServices()                                                     {}
