// Package live is the live environment's init: the bty binary runs as
// PID 1 of the netboot, USB and server initramfs (bty-media builds them),
// mounts the kernel's filesystems, loads the modules the hardware needs,
// brings the network up and then, by the bty.* kernel parameters, flashes
// the machine's primary disk and reports to bty-web, starts bty-tui on
// the consoles, or runs bty-web as an appliance.
package live

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/btyproject/bty/internal/fleet"
)

// Modes of the live environment (bty.mode=).
const (
	ModeFlash       = "flash"       // the default: flash, report done, reboot
	ModeInteractive = "interactive" // bty-tui against the server
	ModeUSB         = "usb"         // bty-tui on the stick's BTY_IMAGES partition
	ModeServer      = "server"      // bty-web appliance on BTY_STATE
)

// DefaultRetryDelay is how long a failed flash waits before the machine
// reboots to ask its server again (bty.retry_delay= in seconds).
const DefaultRetryDelay = 60 * time.Second

// Params are the bty.* kernel parameters the iPXE script (or the USB or
// server image's boot entry) passed.
type Params struct {
	Mode         string
	Server       string     // bty.server: bty-web's base URL
	MAC          fleet.MAC  // bty.mac: the MAC this machine PXE-booted with
	Cycle        string     // bty.cycle: the flash cycle's token, sent back on every call to the server
	ImageURL     string     // bty.image_url
	SHA256       string     // bty.sha256: the decoded image's sha256
	ImageSize    int64      // bty.image_size: the decoded image's size, for progress
	Provisioning fleet.Mode // bty.provisioning: what the live env applies (fleet.Mode.InLiveEnv)
	Hostname     string     // bty.hostname
	Target       string     // bty.target: a device path or a disk serial
	RetryDelay   time.Duration
	// PhoneHome (bty.ready=phone-home) asks the live env to seed
	// cloud-init's phone_home module, so the flashed OS reports ready to
	// POST /pxe/{mac}/ready?cycle=TOKEN. bty-web sets it only with
	// bty.cycle, in cloud-init or cijoe-online mode.
	PhoneHome bool
	// SSHKey is bty-web's public key as an authorized_keys line,
	// "ssh-ed25519 BLOB bty-web", from bty.ssh_key=BLOB (the base64
	// field of an ssh-ed25519 key). In cijoe-online mode the live env
	// seeds it into cloud-init's vendor-data (ssh_authorized_keys, the
	// image's default user) so bty-web can log in to run the workflow;
	// other modes drop it with a note.
	SSHKey string
	// Shell starts a shell on the consoles before anything else
	// (bty.shell=1), for debugging a machine by hand.
	Shell bool
	// Unknown lists bty.* keys this version does not know.
	Unknown []string
	// Notes say how a parameter was taken (for the consoles).
	Notes []string
}

// ParseCmdline reads the bty.* parameters from a kernel command line
// (/proc/cmdline). Values may be double-quoted. Parameters that do not
// start with "bty." are the kernel's and are ignored.
func ParseCmdline(cmdline string) (Params, error) {
	p := Params{Mode: ModeFlash, Provisioning: fleet.ModeNone, RetryDelay: DefaultRetryDelay}
	var errs []error
	for _, f := range splitCmdline(cmdline) {
		key, val, _ := strings.Cut(f, "=")
		if !strings.HasPrefix(key, "bty.") {
			continue
		}
		switch key {
		case "bty.mode":
			switch val {
			case ModeFlash, "auto":
				p.Mode = ModeFlash
			case ModeInteractive, "tui":
				p.Mode = ModeInteractive
			case ModeUSB, ModeServer:
				p.Mode = val
			default:
				errs = append(errs, fmt.Errorf("bty.mode=%q: want flash, interactive, usb or server", val))
			}
		case "bty.server":
			p.Server = val
		case "bty.mac":
			mac, err := fleet.ParseMAC(val)
			if err != nil {
				errs = append(errs, fmt.Errorf("bty.mac=%q: %w", val, err))
				continue
			}
			p.MAC = mac
		case "bty.cycle":
			if !fleet.ValidCycleToken(val) {
				errs = append(errs, fmt.Errorf("bty.cycle=%q: want the %d hex digits bty-web's boot script gives", val, fleet.CycleTokenLen))
				continue
			}
			p.Cycle = val
		case "bty.image_url":
			p.ImageURL = val
		case "bty.sha256":
			p.SHA256 = strings.ToLower(val)
		case "bty.image_size":
			n, err := strconv.ParseInt(val, 10, 64)
			if err != nil || n < 0 {
				errs = append(errs, fmt.Errorf("bty.image_size=%q: want a size in bytes", val))
				continue
			}
			p.ImageSize = n
		case "bty.provisioning":
			p.Provisioning = fleet.Mode(val)
		case "bty.hostname":
			p.Hostname = val
		case "bty.target":
			p.Target = val
		case "bty.retry_delay":
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 {
				errs = append(errs, fmt.Errorf("bty.retry_delay=%q: want a whole number of seconds, at least 1", val))
				continue
			}
			p.RetryDelay = time.Duration(n) * time.Second
		case "bty.ready":
			if val != string(fleet.ReadyPhoneHome) {
				errs = append(errs, fmt.Errorf("bty.ready=%q: want %s (the only readiness the live env seeds)", val, fleet.ReadyPhoneHome))
				continue
			}
			p.PhoneHome = true
		case "bty.ssh_key":
			line, err := authorizedKey(val)
			if err != nil {
				errs = append(errs, fmt.Errorf("bty.ssh_key=%q: %w", val, err))
				continue
			}
			p.SSHKey = line
		case "bty.shell":
			p.Shell = val == "" || val == "1" || val == "yes"
		default:
			p.Unknown = append(p.Unknown, key)
		}
	}
	if p.Server != "" {
		u, err := url.Parse(p.Server)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("bty.server=%q: want an http(s) URL such as http://10.0.0.1:8080", p.Server))
		}
	}
	switch p.Mode {
	case ModeFlash:
		// The provisioning modes a machine record can hold, as the live
		// env can apply them; checked here, before anything is written.
		apply, note, err := p.Provisioning.InLiveEnv()
		if err != nil {
			errs = append(errs, fmt.Errorf("bty.provisioning=%q: %w", string(p.Provisioning), err))
		}
		p.Provisioning = apply
		if note != "" {
			p.Notes = append(p.Notes, note)
		}
		// phone_home needs the cycle's token in its URL and cloud-init to
		// run it; without either the flash goes on, and the server's
		// ready check times out as it would for any silent OS.
		switch {
		case p.PhoneHome && p.Cycle == "":
			p.PhoneHome = false
			p.Notes = append(p.Notes, "bty.ready=phone-home without bty.cycle: the flashed OS cannot phone home (the server accepts it only with the cycle's token); rebuild the live env or update bty-web")
		case p.PhoneHome && p.Provisioning != fleet.ModeCloudInit && p.Provisioning != fleet.ModeCijoeOnline:
			p.PhoneHome = false
			p.Notes = append(p.Notes, fmt.Sprintf("bty.ready=phone-home is ignored with provisioning %s: only cloud-init can phone home; set the machine's ready_check to tcp:22", p.Provisioning))
		}
		// bty-web's key is for its cijoe-online runs only: a machine in
		// another mode does not get bty-web's access to it.
		if p.SSHKey != "" && p.Provisioning != fleet.ModeCijoeOnline {
			p.SSHKey = ""
			p.Notes = append(p.Notes, fmt.Sprintf("bty.ssh_key is ignored with provisioning %s: bty-web's key is seeded only for cijoe-online", p.Provisioning))
		}
		if p.ImageURL == "" {
			errs = append(errs, errors.New("bty.image_url is missing: the server assigned no image (assign one, or boot with bty.mode=interactive)"))
		}
		if p.Server == "" || p.MAC.IsZero() {
			errs = append(errs, errors.New("bty.server and bty.mac are needed to report to the server: boot through bty-web's iPXE script"))
		}
	case ModeInteractive:
		if p.Server == "" {
			errs = append(errs, errors.New("bty.mode=interactive needs bty.server"))
		}
	}
	return p, errors.Join(errs...)
}

// maxSSHKeyBlob bounds bty.ssh_key's value (an ed25519 key's blob is 68
// bytes), as bty-web's boot script does.
const maxSSHKeyBlob = 256

// authorizedKey checks blob, the base64 field of an ssh-ed25519 public
// key, and returns the key as an authorized_keys line commented
// "bty-web".
func authorizedKey(blob string) (string, error) {
	if blob == "" {
		return "", errors.New("empty: want the base64 field of bty-web's ssh-ed25519 public key")
	}
	if len(blob) > maxSSHKeyBlob {
		return "", fmt.Errorf("%d bytes, over %d: want the base64 field of an ssh-ed25519 public key", len(blob), maxSSHKeyBlob)
	}
	if strings.Trim(blob, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") != "" {
		return "", errors.New("want the base64 field of an ssh-ed25519 public key (A-Za-z0-9+/= only)")
	}
	raw, err := base64.StdEncoding.DecodeString(blob)
	if err != nil {
		return "", fmt.Errorf("not base64: %w", err)
	}
	key, err := ssh.ParsePublicKey(raw)
	if err != nil {
		return "", fmt.Errorf("not an SSH public key: %w", err)
	}
	if key.Type() != ssh.KeyAlgoED25519 {
		return "", fmt.Errorf("a %s key; bty-web's key is %s", key.Type(), ssh.KeyAlgoED25519)
	}
	return ssh.KeyAlgoED25519 + " " + blob + " bty-web", nil
}

// splitCmdline splits a kernel command line on spaces outside double
// quotes and drops the quotes, as the kernel's own parser does.
func splitCmdline(s string) []string {
	var out []string
	var b strings.Builder
	inQuote, any := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote, any = !inQuote, true
		case (r == ' ' || r == '\t' || r == '\n') && !inQuote:
			if any {
				out = append(out, b.String())
				b.Reset()
				any = false
			}
		default:
			b.WriteRune(r)
			any = true
		}
	}
	if any {
		out = append(out, b.String())
	}
	return out
}
