package netboot

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/btyproject/bty/internal/fleet"
)

// Default names of the live environment's artifacts under /boot/.
const (
	DefaultKernel = "bty-live-x86_64.vmlinuz"
	DefaultInitrd = "bty-live-x86_64.initrd"
)

// maxCmdline is the x86 Linux kernel's command line limit
// (COMMAND_LINE_SIZE), terminating NUL included.
const maxCmdline = 2048

// ErrNoImage is returned (wrapped) by Script for the flash policy when the
// machine has no image assigned: there is nothing to flash. The caller
// decides what to serve instead (e.g. the tui policy).
var ErrNoImage = errors.New("no image assigned")

// Params are the values a boot script is rendered from. Every string is
// validated (or, for ImageURL, percent-encoded) so that no value can end
// a word or a line, or expand an iPXE setting: a hostname or image name
// cannot add an iPXE command or a kernel argument.
type Params struct {
	// Policy is the script to render: fleet.PolicyLocal, PolicyFlash
	// (the live env in auto-flash mode) or PolicyTUI (interactive).
	Policy fleet.Policy
	// ServerURL is the server's base URL as the PXE request named it
	// ("http://10.0.0.1:8080"): the script fetches the live env from it
	// and the live env talks to it. A trailing "/" is dropped.
	ServerURL string
	// MAC is the machine's address; the script carries its stored form.
	MAC fleet.MAC
	// ImageURL is where the live env downloads the image from (required
	// for flash, optional for tui). Bytes an iPXE script or a kernel
	// command line would misread are percent-encoded.
	ImageURL string
	// ImageSHA256 is the image's sha256 (64 hex digits), if known.
	ImageSHA256 string
	// ImageSize is the decoded image's size in bytes, if known: the live
	// env shows progress against it when the stream does not say.
	ImageSize int64
	// Provisioning is the provisioning mode ("none" when unset).
	Provisioning fleet.Mode
	// Hostname is the machine's hostname (RFC 1123), if any.
	Hostname string
	// Kernel and Initrd name the live env's artifacts under /boot/;
	// DefaultKernel and DefaultInitrd when empty.
	Kernel, Initrd string
	// Note, when set, is echoed on the console before anything else
	// (why the server serves this script). It is server-made text;
	// characters other than letters, digits and " :.,()-_/" are
	// dropped, so it can never be more than an echo.
	Note string
	// Cycle is the flash cycle's token (fleet.NewCycleToken) the live
	// env sends back on its calls; it goes on the kernel command line
	// as bty.cycle= when set (live scripts only). It must have the
	// token's form (fleet.ValidCycleToken).
	Cycle string
	// PhoneHome asks the live env to seed cloud-init's phone_home
	// module so the flashed OS reports ready (POST /pxe/{mac}/ready
	// with the cycle's token): bty.ready=phone-home. It needs Cycle.
	PhoneHome bool
	// SSHKey is the base64 blob of bty-web's ssh-ed25519 public key (the
	// middle field of its authorized_keys line; the type is implied):
	// bty.ssh_key= on a flash script's kernel line, for the live env to
	// seed into the flashed OS in cijoe-online mode. Only
	// A-Za-z0-9+/= and at most MaxSSHKeyBlob bytes are accepted.
	SSHKey string
}

// MaxSSHKeyBlob bounds Params.SSHKey (an ed25519 key's blob is 68
// bytes).
const MaxSSHKeyBlob = 256

// Script renders the iPXE script for p.Policy:
//
//   - local: on UEFI (${platform} is "efi") exit to the firmware, which
//     boots its next boot device; on BIOS sanboot the first disk (0x80),
//     and exit to the BIOS if that fails.
//   - flash: fetch the live env's kernel and initrd from
//     ServerURL/boot/ and boot it with bty.server, bty.mac, bty.cycle
//     (when set), bty.image_url, bty.provisioning (and bty.sha256, bty.hostname,
//     bty.ssh_key when set) and serial + VGA consoles. The kernel line names the initrd
//     (initrd=NAME) because Debian's iPXE under UEFI passes the initrd
//     to the kernel only then.
//   - tui: as flash, plus bty.mode=interactive; the image is optional.
//
// Errors name the offending field; a flash without ImageURL wraps
// ErrNoImage.
func Script(p Params) ([]byte, error) {
	server, err := checkServerURL(p.ServerURL)
	if err != nil {
		return nil, err
	}
	if p.MAC.IsZero() {
		return nil, errors.New("MAC missing: a boot script is rendered for one machine")
	}
	mac := p.MAC.String()
	var script []byte
	switch p.Policy {
	case fleet.PolicyLocal:
		script = localScript(mac)
	case fleet.PolicyFlash, fleet.PolicyTUI:
		if script, err = liveScript(p, server, mac); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("boot policy %q is not one of %q, %q, %q", p.Policy, fleet.PolicyLocal, fleet.PolicyFlash, fleet.PolicyTUI)
	}
	return withNote(script, p.Note), nil
}

// withNote inserts `echo NOTE` after a script's two header lines
// (#!ipxe and the "# bty:" comment).
func withNote(script []byte, note string) []byte {
	note = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(" :.,()-_/", r) {
			return r
		}
		return -1
	}, note)
	if strings.TrimSpace(note) == "" {
		return script
	}
	i := bytes.IndexByte(script, '\n')
	i += 1 + bytes.IndexByte(script[i+1:], '\n')
	var b bytes.Buffer
	b.Write(script[:i+1])
	b.WriteString("echo " + note + "\n")
	b.Write(script[i+1:])
	return b.Bytes()
}

// Bootstrap renders the script GET /pxe-bootstrap.ipxe serves: it chains
// to serverURL/pxe/${netX/mac:hexhyp}, the machine's own boot script,
// asked by the MAC of the NIC iPXE booted from (bootNICMAC). serverURL
// is the base URL the request named, e.g. "http://10.0.0.1:8080".
func Bootstrap(serverURL string) ([]byte, error) {
	server, err := checkServerURL(serverURL)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString("#!ipxe\n")
	b.WriteString("# bty: fetch this machine's boot script by its MAC\n")
	fmt.Fprintf(&b, "chain %s/pxe/%s || goto failed\n", server, bootNICMAC)
	// A boot script that returns (policy local on UEFI exits to hand the
	// machine back to the firmware) ends iPXE too, with a failure status:
	// a UEFI boot manager stops at its menu when a boot option returns
	// success (EDK2's BdsEntry.c), and goes on to the next one, the disk,
	// only after a failure.
	b.WriteString("exit 1\n")
	b.WriteString(":failed\n")
	fmt.Fprintf(&b, "echo bty: no boot script from %s, leaving iPXE\n", server)
	b.WriteString("exit 1\n")
	return b.Bytes(), nil
}

// bootNICMAC is the iPXE expansion of the MAC of the NIC iPXE booted
// from (docs/reference.md, "Inventory"). ${net0/mac} would name the
// first NIC iPXE found, the wrong one on a machine that booted from
// another (ipxe issue 826, matchbox PR 410, Ironic bug 1504482).
//
// netX is "the most recently opened network device": find_netdev
// ("netX") returns last_opened_netdev(), the head of open_net_devices,
// which ifopen puts each device at (src/net/netdevice.c). Before iPXE
// runs a script, autoboot's netboot(netdev) closes every other device
// (close_other_netdevs) and opens the one it boots from
// (src/usr/autoboot.c), so inside the script netX is that device, the
// only one open. Which device that is, per build (checked against
// ipxe/ipxe at 0ab2277, 2026-08):
//
//   - ipxe.efi: efiprefix.c calls efi_set_autoboot_ll_addr with the
//     loaded image's device, the NIC the firmware PXE-booted from, so
//     autoboot tries that NIC only;
//   - snponly.efi and undionly.kpxe drive only the NIC the firmware
//     booted from (its SNP handle, its preloaded UNDI stack): netX and
//     net0 are the same one device;
//   - ipxe.pxe (every driver, chained from a PXE ROM) sets no autoboot
//     device and tries the NICs in order: it boots from the first that
//     gets a DHCP answer with a boot file, and netX names that one,
//     which is the NIC the request came by (net0 may not be);
//   - an iPXE ROM (romprefix.S) sets its own PCI location as the
//     autoboot device.
//
// Either way the MAC is the one the script's HTTP request goes out by,
// the NIC the live env must bring up. A script that opened another NIC
// (ifopen) would move netX; bty's scripts never do.
//
// TestPXEChainOVMF/second-nic (BTY_VMTEST=1) boots an OVMF guest from
// the second of two NICs with Debian's ipxe.efi (1.0.0+git-20190125):
// iPXE names the boot NIC net1 and the bootstrap asks by its MAC; with
// net0 it asked by the first NIC's, which was never up.
const bootNICMAC = "${netX/mac:hexhyp}"

func localScript(mac string) []byte {
	var b bytes.Buffer
	b.WriteString("#!ipxe\n")
	fmt.Fprintf(&b, "# bty: boot policy local for %s\n", mac)
	b.WriteString("echo bty: booting from the local disk\n")
	b.WriteString("iseq ${platform} efi && goto efi ||\n")
	b.WriteString("sanboot --no-describe --drive 0x80 || exit\n")
	b.WriteString(":efi\n")
	b.WriteString("exit\n")
	return b.Bytes()
}

func liveScript(p Params, server, mac string) ([]byte, error) {
	kernel, err := checkArtifact("kernel", p.Kernel, DefaultKernel)
	if err != nil {
		return nil, err
	}
	initrd, err := checkArtifact("initrd", p.Initrd, DefaultInitrd)
	if err != nil {
		return nil, err
	}
	args := []string{
		"initrd=" + initrd,
		"bty.server=" + server,
		"bty.mac=" + mac,
	}
	if p.Policy == fleet.PolicyTUI {
		args = append(args, "bty.mode=interactive")
	}
	if p.Cycle != "" {
		if !fleet.ValidCycleToken(p.Cycle) {
			return nil, fmt.Errorf("flash cycle token %q: want %d lower-case hex digits", p.Cycle, fleet.CycleTokenLen)
		}
		args = append(args, "bty.cycle="+p.Cycle)
		if p.PhoneHome {
			args = append(args, "bty.ready=phone-home")
		}
	}
	if p.SSHKey != "" {
		if err := checkSSHKeyBlob(p.SSHKey); err != nil {
			return nil, err
		}
		if p.Policy == fleet.PolicyFlash {
			args = append(args, "bty.ssh_key="+p.SSHKey)
		}
	}
	if p.ImageURL == "" {
		if p.Policy == fleet.PolicyFlash {
			return nil, fmt.Errorf("boot policy flash for %s: %w; assign an image to the machine or use policy tui", mac, ErrNoImage)
		}
	} else {
		u, err := encodeImageURL(p.ImageURL)
		if err != nil {
			return nil, err
		}
		args = append(args, "bty.image_url="+u)
	}
	prov := string(p.Provisioning.Effective())
	if !isToken(prov) || !p.Provisioning.Valid() {
		return nil, fmt.Errorf("provisioning mode %q: use lower-case letters, digits and '-' only (e.g. none, cloud-init)", prov)
	}
	args = append(args, "bty.provisioning="+prov)
	if p.ImageSHA256 != "" {
		sum, err := checkSHA256(p.ImageSHA256)
		if err != nil {
			return nil, err
		}
		args = append(args, "bty.sha256="+sum)
	}
	if p.ImageSize > 0 {
		args = append(args, fmt.Sprintf("bty.image_size=%d", p.ImageSize))
	}
	if p.Hostname != "" {
		if err := checkHostname(p.Hostname); err != nil {
			return nil, err
		}
		args = append(args, "bty.hostname="+strings.ToLower(p.Hostname))
	}
	// Serial and VGA consoles; the last console= is /dev/console, so the
	// serial line (where a lab's console server listens) gets the TUI
	// and init's messages. panic=10 reboots a live env that panics, so
	// the machine PXE-boots again instead of hanging with nobody there.
	args = append(args, "console=tty0", "console=ttyS0,115200n8", "panic=10")
	cmdline := strings.Join(args, " ")
	if len(cmdline)+1 > maxCmdline {
		return nil, fmt.Errorf("kernel command line is %d bytes, over Linux's limit of %d: use a shorter image URL", len(cmdline), maxCmdline-1)
	}

	var b bytes.Buffer
	b.WriteString("#!ipxe\n")
	fmt.Fprintf(&b, "# bty: boot policy %s for %s\n", p.Policy, mac)
	if p.Policy == fleet.PolicyFlash {
		b.WriteString("echo bty: starting the live environment to flash this machine\n")
	} else {
		b.WriteString("echo bty: starting the live environment in interactive mode\n")
	}
	fmt.Fprintf(&b, "kernel %s/boot/%s %s || goto failed\n", server, kernel, cmdline)
	fmt.Fprintf(&b, "initrd %s/boot/%s || goto failed\n", server, initrd)
	b.WriteString("boot || goto failed\n")
	b.WriteString(":failed\n")
	fmt.Fprintf(&b, "echo bty: could not boot %s/boot/%s, leaving iPXE\n", server, kernel)
	b.WriteString("exit 1\n")
	return b.Bytes(), nil
}

// checkServerURL accepts http(s)://host[:port][/path] made of URL-safe
// bytes only and returns it without a trailing "/".
func checkServerURL(s string) (string, error) {
	if s == "" {
		return "", errors.New("server URL is empty: pass the base URL the PXE request named, e.g. http://10.0.0.1:8080")
	}
	if !isURLSafe(s) {
		return "", fmt.Errorf("server URL %q contains a byte an iPXE script or kernel command line would misread (space, quote, '$', '{', '}', '\\', control character)", s)
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("server URL %q: %w", s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("server URL %q: want http://HOST[:PORT] or https://HOST[:PORT] with no user, query or fragment", s)
	}
	return strings.TrimRight(s, "/"), nil
}

// encodeImageURL checks that s is an absolute http(s) URL and
// percent-encodes every byte outside the URL-safe set, so "$", "{",
// spaces, quotes and newlines become %24, %7B, %20, %22, %0A: the same
// URL to an HTTP server, inert in a script and on a command line.
func encodeImageURL(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if urlSafe(c) {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	enc := b.String()
	u, err := url.Parse(enc)
	if err != nil {
		return "", fmt.Errorf("image URL %q: %w", s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("image URL %q: want an absolute http:// or https:// URL", s)
	}
	return enc, nil
}

// urlSafe reports whether c may appear as is in a URL written into an
// iPXE script and onto a kernel command line: RFC 3986 unreserved and
// reserved characters and '%', minus "'" (a quote to some parsers), ';'
// (a command separator to iPXE when it stands alone) and '#' (a comment
// to script parsers; a fragment means nothing to a download anyway).
func urlSafe(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-._~:/?[]@!&()*+,=%", c) >= 0
}

func isURLSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if !urlSafe(s[i]) {
			return false
		}
	}
	return true
}

// isToken reports whether s is non-empty and made of [a-z0-9-].
func isToken(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// checkArtifact returns name, or def when name is empty, if it is a plain
// file name under /boot/ that is safe in a script.
func checkArtifact(what, name, def string) (string, error) {
	if name == "" {
		return def, nil
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return "", fmt.Errorf("%s name %q: use letters, digits, '.', '-' and '_' only", what, name)
		}
	}
	if name == "." || name == ".." {
		return "", fmt.Errorf("%s name %q is not a file name", what, name)
	}
	return name, nil
}

// checkSSHKeyBlob accepts the base64 blob of an SSH public key: 1 to
// MaxSSHKeyBlob bytes of A-Za-z0-9+/=, nothing a script or a kernel
// command line would misread.
func checkSSHKeyBlob(s string) error {
	if len(s) > MaxSSHKeyBlob {
		return fmt.Errorf("SSH key blob is %d bytes, over %d: want the base64 field of an ssh-ed25519 public key", len(s), MaxSSHKeyBlob)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '+' || c == '/' || c == '=') {
			return fmt.Errorf("SSH key blob %q: want the base64 field of an ssh-ed25519 public key (A-Za-z0-9+/= only), not the whole authorized_keys line", s)
		}
	}
	return nil
}

func checkSHA256(s string) (string, error) {
	if len(s) != 64 {
		return "", fmt.Errorf("image sha256 %q: want 64 hex digits, got %d characters", s, len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return "", fmt.Errorf("image sha256 %q: want 64 hex digits", s)
		}
	}
	return strings.ToLower(s), nil
}

// checkHostname accepts an RFC 1123 host name: dot-separated labels of
// letters, digits and '-', each 1-63 bytes, not starting or ending with
// '-', 253 bytes at most.
func checkHostname(s string) error {
	bad := func(why string) error {
		return fmt.Errorf("hostname %q: %s (RFC 1123: letters, digits and '-' in dot-separated labels)", s, why)
	}
	if len(s) > 253 {
		return bad("longer than 253 bytes")
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 {
			return bad("a label is empty or longer than 63 bytes")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return bad("a label starts or ends with '-'")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return bad(fmt.Sprintf("byte %q is not allowed", c))
			}
		}
	}
	return nil
}
