package live

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/disk"
	"github.com/btyproject/bty/internal/event"
	"github.com/btyproject/bty/internal/fleet"
)

func TestParseCmdlineFlash(t *testing.T) {
	// What internal/netboot's flash script puts on the kernel line.
	line := `bty-live-x86_64.vmlinuz initrd=bty-live-x86_64.initrd bty.server=http://192.0.2.1:8080 bty.mac=52-54-00-B7-70-01 ` +
		`bty.cycle=0123456789abcdef0123456789abcdef bty.image_url=http://192.0.2.1:8080/images/debian%2013.img.zst bty.provisioning=cloud-init ` +
		`bty.sha256=ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789 bty.hostname=vm-1 bty.retry_delay=7 bty.image_size=2147483648 ` +
		`bty.frobnicate=1 console=tty0 console=ttyS0,115200n8 panic=10`
	p, err := ParseCmdline(line)
	if err != nil {
		t.Fatal(err)
	}
	want := Params{Mode: ModeFlash, Server: "http://192.0.2.1:8080", MAC: fleet.MustParseMAC("52:54:00:b7:70:01"),
		ImageURL: "http://192.0.2.1:8080/images/debian%2013.img.zst", Provisioning: "cloud-init",
		SHA256:   "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789",
		Hostname: "vm-1", RetryDelay: 7 * time.Second, Unknown: []string{"bty.frobnicate"}}
	if p.Mode != want.Mode || p.Server != want.Server || p.MAC != want.MAC || p.ImageURL != want.ImageURL ||
		p.Provisioning != want.Provisioning || p.SHA256 != want.SHA256 || p.Hostname != want.Hostname ||
		p.RetryDelay != want.RetryDelay || p.ImageSize != 2<<30 || p.Cycle != "0123456789abcdef0123456789abcdef" || strings.Join(p.Unknown, ",") != "bty.frobnicate" {
		t.Errorf("got  %+v\nwant %+v", p, want)
	}
}

func TestParseCmdlineModesAndErrors(t *testing.T) {
	for _, tc := range []struct {
		line, mode, err string
	}{
		{`bty.mode=usb console=ttyS0`, ModeUSB, ""},
		{`bty.mode=server`, ModeServer, ""},
		{`bty.mode=interactive bty.server=http://h:8080 bty.mac=aa:bb:cc:dd:ee:ff`, ModeInteractive, ""},
		{`bty.mode=interactive`, ModeInteractive, "needs bty.server"},
		{`bty.server=http://h:8080 bty.mac=aa:bb:cc:dd:ee:ff`, ModeFlash, "bty.image_url is missing"},
		{`bty.image_url=http://h/x.img`, ModeFlash, "bty.server and bty.mac"},
		{`bty.mode=wild`, ModeFlash, `bty.mode="wild"`},
		{`bty.mode=usb bty.mac=zz`, ModeUSB, `bty.mac="zz"`},
		{`bty.mode=usb bty.image_size=-1`, ModeUSB, "bty.image_size"},
		{`bty.mode=usb bty.cycle=0123456789ABCDEF0123456789ABCDEF`, ModeUSB, "bty.cycle"},
		{`bty.mode=usb bty.cycle=0123`, ModeUSB, "bty.cycle"},
		{`bty.mode=usb bty.retry_delay=0`, ModeUSB, "bty.retry_delay"},
		{`bty.mode=usb bty.ready=tcp:22`, ModeUSB, `bty.ready="tcp:22": want phone-home`},
		{`bty.mode=usb bty.ready=`, ModeUSB, `bty.ready="": want phone-home`},
		{`bty.mode=usb bty.server=ftp://x`, ModeUSB, "want an http(s) URL"},
		{`bty.mode=usb bty.target="/dev/disk/by-id/ata-X Y"`, ModeUSB, ""},
		{`bty.server=http://h:8080 bty.mac=aa:bb:cc:dd:ee:ff bty.image_url=http://h/x.img bty.provisioning=cijoe`, ModeFlash, "set the machine's provisioning to cloud-init"},
		{`bty.server=http://h:8080 bty.mac=aa:bb:cc:dd:ee:ff bty.image_url=http://h/x.img bty.provisioning=magic`, ModeFlash, `bty.provisioning="magic"`},
	} {
		p, err := ParseCmdline(tc.line)
		if p.Mode != tc.mode {
			t.Errorf("%s: mode %q, want %q", tc.line, p.Mode, tc.mode)
		}
		if tc.err == "" && err != nil {
			t.Errorf("%s: unexpected error %v", tc.line, err)
		}
		if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s: error %v, want one containing %q", tc.line, err, tc.err)
		}
	}
	p, _ := ParseCmdline(`bty.mode=usb bty.target="/dev/disk/by-id/ata-X Y"`)
	if p.Target != "/dev/disk/by-id/ata-X Y" {
		t.Errorf("quoted value: %q", p.Target)
	}
}

func TestPickTarget(t *testing.T) {
	disks := []disk.Disk{
		{Path: "/dev/loop0", Name: "loop0", Type: "loop", SizeBytes: 1 << 30},
		{Path: "/dev/nvme0n1", Name: "nvme0n1", Type: "disk", SizeBytes: 1 << 40, Serial: "S1", Mountpoints: []string{"/mnt"}},
		{Path: "/dev/sda", Name: "sda", Type: "disk", SizeBytes: 1 << 34, Removable: true, Serial: "USB1"},
		{Path: "/dev/sdb", Name: "sdb", Type: "disk", SizeBytes: 1 << 35, Serial: "SATA2"},
		{Path: "/dev/vda", Name: "vda", Type: "disk", SizeBytes: 1 << 32},
	}
	d, err := PickTarget(disks, "")
	if err != nil || d.Path != "/dev/sdb" {
		t.Errorf("primary disk: %v %v, want /dev/sdb (the mounted nvme and the removable sda are passed over)", d.Path, err)
	}
	for want, path := range map[string]string{"vda": "/dev/vda", "/dev/vda": "/dev/vda", "USB1": "/dev/sda", "SATA2": "/dev/sdb"} {
		d, err := PickTarget(disks, want)
		if err != nil || d.Path != path {
			t.Errorf("bty.target=%s: %v %v, want %s", want, d.Path, err, path)
		}
	}
	if _, err := PickTarget(disks, "S1"); err == nil || !strings.Contains(err.Error(), "mounted at /mnt") {
		t.Errorf("a mounted target: %v", err)
	}
	if _, err := PickTarget(disks, "nope"); err == nil || !strings.Contains(err.Error(), "matches no disk") {
		t.Errorf("an unknown target: %v", err)
	}
	_, err = PickTarget(disks[:3], "")
	if err == nil {
		t.Fatal("no usable disk, no error")
	}
	for _, want := range []string{"/dev/loop0 (is a loop device)", "/dev/nvme0n1 serial S1 (mounted at /mnt", "/dev/sda serial USB1 (removable)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestConsoleSinkThrottles(t *testing.T) {
	var b bytes.Buffer
	s := newConsoleSink(&b)
	now := time.Unix(1000, 0)
	s.now = func() time.Time { return now }
	total := int64(1000 << 20)
	emit := func(written int64) {
		s.Emit(event.Event{Event: event.Progress, BytesWritten: written, TotalBytes: total, Rate: 100 << 20})
	}
	emit(10 << 20) // 1 %: first line
	emit(20 << 20) // same 10 % step, same instant: dropped
	emit(110 << 20)
	now = now.Add(6 * time.Second)
	emit(120 << 20) // 12 %: time has passed
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %d lines, want 3:\n%s", len(lines), b.String())
	}
	if want := "bty-live: flash 11% (110 MiB of 1000 MiB, 100 MiB/s, ETA 9s)"; lines[1] != want {
		t.Errorf("line %q, want %q", lines[1], want)
	}
	b.Reset()
	now = now.Add(6 * time.Second)
	s.Emit(event.Event{Event: event.Progress, BytesWritten: 5 << 20, Rate: 1 << 20})
	if got := strings.TrimSpace(b.String()); got != "bty-live: flash 5.0 MiB written, 1.0 MiB/s" {
		t.Errorf("unknown size: %q", got)
	}
	// The server's bty.image_size stands in for a size the stream does
	// not tell.
	b.Reset()
	s.size = 10 << 20
	now = now.Add(6 * time.Second)
	s.Emit(event.Event{Event: event.Progress, BytesWritten: 5 << 20, Rate: 1 << 20})
	if got := strings.TrimSpace(b.String()); got != "bty-live: flash 50% (5.0 MiB of 10 MiB, 1.0 MiB/s, ETA 5s)" {
		t.Errorf("size from the server: %q", got)
	}
}

// TestParseCmdlineCijoeOnline: a record with cijoe-online flashes without
// provisioning (bty-web runs the workflow after the boot) and says so;
// bty flash itself refuses the mode, so passing it on would fail every
// flash.
func TestParseCmdlineCijoeOnline(t *testing.T) {
	p, err := ParseCmdline(`bty.server=http://h:8080 bty.mac=aa:bb:cc:dd:ee:ff bty.image_url=http://h/x.img bty.provisioning=cijoe-online`)
	if err != nil {
		t.Fatal(err)
	}
	if p.Provisioning != fleet.ModeCijoeOnline || len(p.Notes) != 1 || !strings.Contains(p.Notes[0], "bty-web runs the workflow") {
		t.Errorf("provisioning %q, notes %q; want cijoe-online and a note", p.Provisioning, p.Notes)
	}
}

// testSSHKey is the blob of an ssh-ed25519 public key; testRSAKey an
// ssh-rsa one's.
const (
	testSSHKey = "AAAAC3NzaC1lZDI1NTE5AAAAIP+trxoTcLtFU0qCbpFj/vGWWvcMpSnBOEp9a3B0r2yi"
	testRSAKey = "AAAAB3NzaC1yc2EAAAADAQABAAAAgQDI4spxgGzMksdcsjOQHKmLbXkMqDMFyA9zZV2tosIJB3chU/vesmGiT6sapzdv17ExlPLvtNx0jc0Jr0wnpTe6o66B78U/LEKYiFlVrQGHww5fiL9HTLuOnw7f7L+MyO+2iJ9wTIEnqMVwoHDEnNda2jHXm/vOWnExec7xcJZ0yw=="
)

// TestParseCmdlineSSHKey: bty.ssh_key=BLOB becomes bty-web's
// authorized_keys line in cijoe-online mode, is dropped with a note in
// other modes, and anything but an ssh-ed25519 key's base64 blob is an
// error naming the parameter.
func TestParseCmdlineSSHKey(t *testing.T) {
	const base = `bty.server=http://h:8080 bty.mac=aa:bb:cc:dd:ee:ff bty.image_url=http://h/x.img `
	p, err := ParseCmdline(base + `bty.provisioning=cijoe-online bty.ssh_key=` + testSSHKey)
	if err != nil {
		t.Fatal(err)
	}
	if want := "ssh-ed25519 " + testSSHKey + " bty-web"; p.SSHKey != want {
		t.Errorf("SSHKey = %q, want %q", p.SSHKey, want)
	}
	p, err = ParseCmdline(base + `bty.provisioning=cloud-init bty.ssh_key=` + testSSHKey)
	if err != nil {
		t.Fatal(err)
	}
	if notes := strings.Join(p.Notes, "\n"); p.SSHKey != "" || !strings.Contains(notes, "bty.ssh_key is ignored with provisioning cloud-init") {
		t.Errorf("cloud-init: SSHKey %q, notes %q; want none and a note", p.SSHKey, p.Notes)
	}
	for name, bad := range map[string]string{
		"empty":          ``,
		"rsa key":        testRSAKey,
		"not a key":      "aGVsbG8gd29ybGQ=",
		"not base64":     testSSHKey[:len(testSSHKey)-1],
		"bad characters": strings.ReplaceAll(testSSHKey, "+", "-"),
		"whole line":     `"ssh-ed25519 ` + testSSHKey + ` bty-web"`,
		"too long":       strings.Repeat("A", 260),
	} {
		t.Run(name, func(t *testing.T) {
			p, err := ParseCmdline(base + `bty.provisioning=cijoe-online bty.ssh_key=` + bad)
			if err == nil || !strings.Contains(err.Error(), "bty.ssh_key=") {
				t.Errorf("error %v, want one naming bty.ssh_key", err)
			}
			if p.SSHKey != "" {
				t.Errorf("SSHKey = %q from a bad value", p.SSHKey)
			}
		})
	}
}

// TestParseCmdlinePhoneHome: bty.ready=phone-home is taken with a cycle
// in cloud-init mode, and dropped with a note where the OS could not
// phone home.
func TestParseCmdlinePhoneHome(t *testing.T) {
	const base = `bty.server=http://h:8080 bty.mac=aa:bb:cc:dd:ee:ff bty.image_url=http://h/x.img `
	const cycle = `bty.cycle=0123456789abcdef0123456789abcdef `
	for _, tc := range []struct {
		name, line string
		want       bool
		note       string
	}{
		{"cloud-init with a cycle", base + cycle + `bty.provisioning=cloud-init bty.ready=phone-home`, true, ""},
		{"not asked", base + cycle + `bty.provisioning=cloud-init`, false, ""},
		{"no cycle", base + `bty.provisioning=cloud-init bty.ready=phone-home`, false, "without bty.cycle"},
		{"no cloud-init", base + cycle + `bty.provisioning=none bty.ready=phone-home`, false, "only cloud-init can phone home"},
		{"cijoe-online with a cycle", base + cycle + `bty.provisioning=cijoe-online bty.ready=phone-home`, true, "bty-web runs the workflow"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParseCmdline(tc.line)
			if err != nil {
				t.Fatal(err)
			}
			if p.PhoneHome != tc.want {
				t.Errorf("PhoneHome = %v, want %v", p.PhoneHome, tc.want)
			}
			notes := strings.Join(p.Notes, "\n")
			if (tc.note == "") != (notes == "") || !strings.Contains(notes, tc.note) {
				t.Errorf("notes %q, want one containing %q", p.Notes, tc.note)
			}
		})
	}
}
