// Package netboot holds bty-web's PXE services: the iPXE scripts of the
// boot policies, a TFTP server for the iPXE binaries and a proxy-DHCP
// responder. internal/server wires them up; nothing here touches the
// store or HTTP.
//
// # iPXE scripts
//
// GET /pxe/{mac} serves Script(Params{...}) with Content-Type text/plain:
//
//	script, err := netboot.Script(netboot.Params{
//		Policy:       fleet.Decide(m).Serve, // local, flash or tui
//		ServerURL:    base,                         // "http://" + r.Host, as the request named it
//		MAC:          m.MAC,
//		ImageURL:     base + "/images/" + url.PathEscape(m.Image), // "" when none
//		ImageSHA256:  sha,                          // "" when not known yet
//		Provisioning: m.ProvisioningMode,
//		Hostname:     m.Hostname,
//	})
//
// An error is a value that cannot be put in a script safely (a hostname
// with a space, a malformed MAC...) or, wrapping ErrNoImage, a flash
// policy with no image; the message names the field. Values are
// validated, never passed through: nothing a user can set reaches the
// script or the kernel command line as an iPXE command, a "${...}"
// expansion or an extra kernel argument (image URLs are percent-encoded).
//
// GET /pxe-bootstrap.ipxe serves Bootstrap(base), which chains to
// base/pxe/${netX/mac:hexhyp}: the NIC iPXE booted from.
//
// # TFTP
//
//	t := netboot.NewTFTP(os.Getenv("BTY_IPXE_DIR"), logger) // "" = /usr/lib/ipxe
//	t.Register(prometheus.DefaultRegisterer)
//	go t.ListenAndServe(ctx, ":69") // returns nil once ctx is done
//
// Only undionly.kpxe, ipxe.efi and snponly.efi are served, read-only.
// Stats() has the counters for tests and the UI.
//
// # Proxy-DHCP
//
//	p := netboot.NewProxyDHCP(logger)
//	p.Register(prometheus.DefaultRegisterer)
//	err := p.Start("eth1", nil, "http://10.0.0.1:8080") // nil: the interface's IPv4 address
//	...
//	p.Start("eth2", nil, url) // the settings page changed the interface
//	p.Stop()                  // disabled, or at shutdown
//
// It answers only PXE clients, on UDP 67 and 4011 of that interface, and
// never hands out addresses: BIOS clients get undionly.kpxe, UEFI x86-64
// clients ipxe.efi (both by TFTP from the server address, so TFTP must be
// on port 69 for them), iPXE clients the URL of /pxe-bootstrap.ipxe.
// Status() reports what runs.
//
//	p.SetDecline(func(mac net.HardwareAddr) (bool, string) { ... })
//
// The hook is asked before a PXE firmware client (BIOS or UEFI, never
// iPXE) gets its boot file; declined, the client gets no answer, and
// none to its retries for DeclineWindow (the hook not asked again), so
// its firmware goes on to its next boot option. bty-web declines
// machines whose next boot is their disk.
package netboot
