package e2e

// TestPXEReflashCycle (BTY_VMTEST=1, root) is the fleet's reflash cadence
// end to end, with nothing stood in: the real bty-web (HTTP, TFTP,
// proxy-DHCP) in a server namespace, the network's own DHCP server
// (dnsmasq, addresses only) on a lab bridge, the live env bty-media
// builds, the cached Debian test image as .img.zst, and a UEFI QEMU guest
// whose firmware PXE-boots (no option ROM) with a blank disk.
//
// Run 0: an image the catalog lacks: the live env fails, reports why (the
// record's last_failure), offers a shell and waits to retry; nothing is
// written.
//
// Run 1: the operator assigns the image with policy flash (bty-ctl); the
// guest PXE-boots (proxy-DHCP, TFTP ipxe.efi, /pxe-bootstrap.ipxe,
// /pxe/MAC, /boot/...), the live env flashes the image onto /dev/vda,
// verifies its sha256, reports done and reboots (QEMU ends: -no-reboot).
// The record then has last_flashed_at, and the disk's first bytes are the
// image's, bit for bit.
//
// Between runs 1 and 2, a stranger on the network (the server's own
// address) sends the machine's MAC with the flash cycle's token, read
// from run 1's console: its PXE contact gets the local disk, its seed
// and report calls are refused, and the machine's own disk boot stays
// next.
//
// Run 2 (same disk, same firmware variables): the guest's firmware asks
// DHCP again; its next boot is the disk (once), so proxy-DHCP records the
// contact and offers no boot file, and stays silent to the firmware's
// retries: the firmware goes through its other network boot options
// (IPv6 PXE, HTTP boot; OVMF's defaults) to the flashed disk, with no
// iPXE in the way: the Debian image prints BTY-BOOTED. The record's next
// PXE boot is a reflash again. The detour (from the declined DHCP
// request to the disk's boot loader) is measured and reported.
//
// The cloud-init seed, the seeded OS and a stranger mid-cycle are
// TestFleetIPMI's (fleet_test.go).

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/btyproject/bty/internal/imagetest"
)

const (
	pxeMAC       = "52:54:00:b7:e2:01"
	pxeImageName = "debian-bookworm.img.zst"
	targetSize   = 4 << 30

	liveKernel = "bty-live-x86_64.vmlinuz"
	liveInitrd = "bty-live-x86_64.initrd"
)

func TestPXEReflashCycle(t *testing.T) {
	needVMTest(t, "PXE-boots a UEFI guest from the real bty-web, flashes the Debian image with the live env after a failed flash, then boots it (about 8 minutes under TCG, 4 to 4.5 of them the firmware's detour through its other network boot options on the disk boot)",
		toolQEMU, toolOVMF, toolIP, toolDnsmasq, toolIPXE, toolZstd)
	repo := repoRoot(t)
	tmp := t.TempDir()
	testStart := time.Now()

	// The live env's netboot pair.
	bootDir := filepath.Join(tmp, "boot")
	mediaTook := runBtyMedia(t, repo, "netboot", "--out", bootDir, "--cache", filepath.Join(repo, ".cache", "bty-media"))
	var phases []phase
	report := append([]string{fmt.Sprintf("MEDIA bty-media-netboot %ds", int(mediaTook.Round(time.Second).Seconds()))},
		checkNetbootArtifacts(t, bootDir)...)
	// Whatever was measured, also when a later step fails.
	defer func() { reportPhases(t, phases, report...) }()

	// The image, served from the image root as .img.zst.
	img, sum, size := debianImage(t, repo)
	zst := zstdOf(t, img, sum)
	imageRoot := filepath.Join(tmp, "images")
	if err := os.MkdirAll(imageRoot, 0o755); err != nil {
		t.Fatal(err)
	}
	// bty-web serves only files inside its image root (a link out of it
	// is refused), as an operator's server would: a hard link, or a copy
	// across filesystems.
	linkOrCopy(t, zst, filepath.Join(imageRoot, pxeImageName))
	t.Logf("image %s: %s decoded, sha256 %s; served as %s", img, humanize.IBytes(uint64(size)), sum, pxeImageName)

	l := newLab(t, true)
	w := startBtyWeb(t, repo, l, tmp, bootDir, imageRoot)
	waitImageHashed(t, w, pxeImageName, sum)

	w.ctlRun(t, w.password+"\n", "login", "--password-stdin")
	disk := filepath.Join(tmp, "target.raw")
	sparseFile(t, disk, targetSize)
	vars := copyVars(t, tmp)
	tap := l.addTap(t)
	guest := []string{
		"-netdev", "tap,id=n0,ifname=" + tap + ",script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,mac=" + pxeMAC + ",romfile=,bootindex=1",
		"-drive", "if=none,id=d0,format=raw,file=" + disk,
		"-device", "virtio-blk-pci,drive=d0,bootindex=2",
		// The live env waits for the kernel's entropy; TCG's default CPU
		// has no RDRAND.
		"-device", "virtio-rng-pci",
		// OVMF as it comes: IPv4 and IPv6 PXE and HTTP boot on, like
		// most server firmware (see run 2).
	}

	// Run 0: the operator's typo, an image the catalog lacks. The live
	// env's flash fails before a byte is written, it reports why (the
	// record's last_failure) and says it retries after the delay, with a
	// shell on offer meanwhile; the record stays a flash that never
	// happened.
	const missing = "no-such-image.img.zst"
	w.ctlRun(t, "", "machines", "set", pxeMAC, "--image", missing, "--policy", "flash")
	v0 := startVM(t, "run0-failure", l.ns, vars, 1024, 5*time.Minute, guest...)
	v0.expect(t, `bty-live: starting \(netboot`, 4*time.Minute)
	v0.expect(t, `bty-live: FLASH FAILED: .*`+regexp.QuoteMeta(missing)+`.*404`, 2*time.Minute)
	v0.expect(t, `bty-live: reported the failure to `+regexp.QuoteMeta(w.url), time.Minute)
	v0.expect(t, `bty-live: retrying in 1m0s: .*press Enter for a shell`, 30*time.Second)
	v0.stop()
	if m := w.machineGet(t, pxeMAC); !strings.Contains(m.LastFailure, missing) || !strings.Contains(m.LastFailure, "404") ||
		m.LastFlashedAt != nil || m.NextBoot != "flash" {
		t.Errorf("after the failed flash: last_failure %q, last_flashed_at %v, next_boot %q; want the reason (the image, 404), never flashed, flash again",
			m.LastFailure, m.LastFlashedAt, m.NextBoot)
	}
	if n := allocatedBytes(t, disk); n != 0 {
		t.Errorf("the failed flash wrote %d bytes to the disk", n)
	}

	// The operator's part, with the real bty-ctl.
	w.ctlRun(t, "", "machines", "set", strings.ReplaceAll(strings.ToUpper(pxeMAC), ":", "-"), "--image", pxeImageName, "--policy", "flash")
	if m := w.machineGet(t, pxeMAC); m.BootPolicy != "flash" || m.Image != pxeImageName || m.LastFlashedAt != nil {
		t.Fatalf("after machines set: %+v, want policy flash, image %s, never flashed", m, pxeImageName)
	}

	// Run 1: PXE, the live env, the flash, done, reboot.
	logMark := w.log.mark()
	v1 := startVM(t, "run1-flash", l.ns, vars, 1024, 9*time.Minute, guest...)
	v1.expect(t, `bty: starting the live environment to flash this machine`, 4*time.Minute)
	// The kernel prints its command line on the console: the flash
	// cycle's token is there (someone at the console could read it, so
	// the stranger below has it too).
	cmdline := v1.expect(t, `Command line: .* bty\.sha256=`+sum+` `, 2*time.Minute)
	cycleM := regexp.MustCompile(`bty\.cycle=([0-9a-f]{32})\b`).FindStringSubmatch(cmdline.text)
	if cycleM == nil {
		t.Fatalf("no bty.cycle token on the live env's command line: %s", cmdline.text)
	}
	live := v1.expect(t, `bty-live: starting \(netboot, bty .+, kernel \S+\)`, 3*time.Minute)
	phases = append(phases, phase{"pxe-to-live-env", live.at})
	v1.expect(t, `bty-live: network up on \S+ 192\.0\.2\.\d+/24`, 2*time.Minute)
	imageURL := w.url + "/images/" + pxeImageName
	flashing := v1.expect(t, `bty-live: flashing `+regexp.QuoteMeta(imageURL)+` onto /dev/vda\b`, 2*time.Minute)
	failedRE := regexp.MustCompile(`bty-live: FLASH FAILED`)
	v1.expect(t, `bty-live: flash \d+%`, 3*time.Minute)
	v1.expect(t, `bty-live: verified sha256 `+sum, 8*time.Minute)
	v1.expect(t, `bty-live: flash done in \S+`, time.Minute)
	done := v1.expect(t, `bty-live: reported done to `+regexp.QuoteMeta(w.url), time.Minute)
	phases = append(phases, phase{"flash", done.at - flashing.at})
	v1.expect(t, `bty-live: rebooting`, time.Minute)
	if err := v1.waitExit(2 * time.Minute); err != nil {
		t.Fatalf("QEMU did not end after the live env rebooted (-no-reboot): %v", err)
	}
	if f := v1.serial.all(failedRE); len(f) > 0 {
		t.Errorf("the live env reported a failure on the way: %q", f[0].text)
	}
	checkChain(t, w, logMark, v1.start, []chainStep{
		{"proxy-DHCP answers the firmware", `msg="proxy-DHCP answered a PXE client" .*boot=uefi file=ipxe\.efi`},
		{"TFTP sends ipxe.efi", `msg="TFTP sent" .*file=ipxe\.efi`},
		{"proxy-DHCP answers iPXE with the bootstrap URL", `msg="proxy-DHCP answered a PXE client" .*boot=ipxe file=http://192\.0\.2\.1:8080/pxe-bootstrap\.ipxe`},
		{"iPXE fetches the bootstrap", `path=/pxe-bootstrap.ipxe status=200`},
		{"iPXE fetches the machine's script", `path=/pxe/` + strings.ReplaceAll(pxeMAC, ":", "-") + ` status=200`},
		{"iPXE fetches the kernel", `path=/boot/` + liveKernel + ` status=200`},
		{"iPXE fetches the initrd", `path=/boot/` + liveInitrd + ` status=200`},
		{"the live env downloads the image", `path=/images/` + pxeImageName + ` status=(200|206)`},
		{"the live env reports done", `method=POST path=/pxe/` + pxeMAC + `/done status=200|method=POST path=/pxe/` + strings.ReplaceAll(pxeMAC, ":", "-") + `/done status=200`},
	})

	m := w.machineGet(t, pxeMAC)
	if m.LastFlashedAt == nil || m.LastFlashedAt.Before(testStart.Add(-time.Second)) {
		t.Errorf("after run 1: last_flashed_at %v, want a time after the test started (%s)", m.LastFlashedAt, testStart.Format(time.RFC3339))
	}
	if m.BootPolicy != "flash" || m.NextBoot != "local" {
		t.Errorf("after run 1: boot_policy %q next_boot %q, want flash (done never changes it) and local (the disk boots once)", m.BootPolicy, m.NextBoot)
	}
	if got := imagetest.SHA256(t, disk, 0, size); got != sum {
		t.Fatalf("the target disk's first %d bytes have sha256 %s, want the image's %s", size, got, sum)
	}
	t.Logf("the target disk's first %s are the image's, bit for bit (sha256 %s)", humanize.IBytes(uint64(size)), sum)

	// A stranger after done cannot use up the machine's disk boot.
	stranger(t, w, pxeMAC, cycleM[1], "after done")
	if m := w.machineGet(t, pxeMAC); m.NextBoot != "local" {
		t.Errorf("after the stranger's contact: next_boot %q, want local still (the machine's own disk boot is next)", m.NextBoot)
	}

	// Run 2: the firmware asks DHCP again; local once: no boot file; the
	// firmware boots the flashed disk.
	logMark = w.log.mark()
	v2 := startVM(t, "run2-local", l.ns, vars, 1024, 12*time.Minute, guest...)
	d2 := diskBootDetour(t, w, v2, logMark)
	phases = append(phases, phase{"pxe-declined-to-disk", d2.total})
	report = append(report, d2.lines("run2")...)
	m2 := w.machineGet(t, pxeMAC)
	if m2.NextBoot != "flash" {
		t.Errorf("after the declined DHCP contact: next_boot %q, want flash (the disk boots once, the next PXE boot reflashes)", m2.NextBoot)
	}
	if m2.LastSeenAt == nil || m.LastSeenAt == nil || !m2.LastSeenAt.After(*m.LastSeenAt) {
		t.Errorf("after the declined DHCP contact: last_seen_at %v, want later than run 1's %v (the contact is recorded)", m2.LastSeenAt, m.LastSeenAt)
	}
	if m2.LastSeenIP != m.LastSeenIP {
		t.Errorf("after the declined DHCP contact: last_seen_ip %q, want run 1's %q kept (a DHCP contact has no address)", m2.LastSeenIP, m.LastSeenIP)
	}
	if m.LastFlashedAt != nil && (m2.LastFlashedAt == nil || !m2.LastFlashedAt.Equal(*m.LastFlashedAt)) {
		t.Errorf("after run 2's PXE contact: last_flashed_at %v, want run 1's %v", m2.LastFlashedAt, m.LastFlashedAt)
	}
	booted := v2.expect(t, `BTY-BOOTED hostname=\S+ state=\S*`, 7*time.Minute)
	phases = append(phases, phase{"reboot-to-os", booted.at})
	checkNoNetboot(t, w, v2, logMark)
	marker := markerRE.FindStringSubmatch(booted.text)
	if marker == nil || marker[1] != "bty-vm" {
		t.Errorf("booted %q, want the image's own hostname bty-vm (provisioning none)", booted.text)
	} else if marker[2] != "running" {
		t.Errorf("the flashed Debian booted %s, not running; failed units: %s", marker[2], marker[3])
	}
	v2.stop()
	if f := v2.serial.all(regexp.MustCompile(`bty-live: starting`)); len(f) > 0 {
		t.Errorf("run 2 started the live env (%q): policy flash must boot the disk once after a done", f[0].text)
	}

}

// checkNetbootArtifacts checks bty-media netboot's output: the kernel and
// initrd exist, are not empty, and SHA256SUMS names both with their true
// sums. It returns a SIZE line for each.
func checkNetbootArtifacts(t *testing.T, dir string) []string {
	t.Helper()
	sums := map[string]string{}
	f, err := os.Open(filepath.Join(dir, "SHA256SUMS"))
	if err != nil {
		t.Fatalf("bty-media netboot wrote no SHA256SUMS: %v", err)
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) == 2 {
			sums[strings.TrimPrefix(fs[1], "*")] = fs[0]
		}
	}
	f.Close()
	var out []string
	for _, name := range []string{liveKernel, liveInitrd} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("bty-media netboot: %v", err)
		}
		if st.Size() == 0 {
			t.Fatalf("bty-media netboot: %s is empty", name)
		}
		if got := imagetest.SHA256(t, filepath.Join(dir, name), 0, st.Size()); sums[name] != got {
			t.Errorf("SHA256SUMS says %s is %q, it is %s", name, sums[name], got)
		}
		out = append(out, fmt.Sprintf("SIZE %s %d (%s)", name, st.Size(), humanize.IBytes(uint64(st.Size()))))
	}
	return out
}

// waitImageHashed waits for bty-web's catalog (GET /images, an open
// route) to list name with decoded_sha256 = sum, so the flash script
// carries bty.sha256 and the live env verifies the stream against it.
func waitImageHashed(t *testing.T, w *btyWeb, name, sum string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		code, body := get(t, w.ns, w.url+"/images")
		var list []struct {
			Name          string  `json:"name"`
			Format        string  `json:"format"`
			DecodedSHA256 *string `json:"decoded_sha256"`
			Error         string  `json:"error"`
		}
		if code == 200 {
			if err := json.Unmarshal([]byte(body), &list); err != nil {
				t.Fatalf("GET /images: %v\n%s", err, tail(body, 2000))
			}
		}
		for _, e := range list {
			if e.Name != name {
				continue
			}
			if e.Error != "" {
				t.Fatalf("bty-web's catalog: %s: %s", name, e.Error)
			}
			if e.DecodedSHA256 != nil {
				if *e.DecodedSHA256 != sum {
					t.Fatalf("bty-web hashed %s (decoded) as %s, want %s", name, *e.DecodedSHA256, sum)
				}
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("bty-web's catalog did not hash %s within 3 minutes: GET /images %d %s", name, code, tail(body, 2000))
		}
		time.Sleep(time.Second)
	}
}

type chainStep struct{ what, pattern string }

// checkChain finds each step in bty-web's log lines from mark on, in
// order, and logs when each happened relative to the guest's power-on.
func checkChain(t *testing.T, w *btyWeb, mark int, poweredOn time.Time, steps []chainStep) {
	t.Helper()
	from := mark
	for _, s := range steps {
		ln, i, ok := w.log.find(regexp.MustCompile(s.pattern), from)
		if !ok {
			t.Errorf("PXE chain: no %s in bty-web's log after the previous step (/%s/)", s.what, s.pattern)
			continue
		}
		from = i + 1
		t.Logf("chain [%6.1fs] %s", (w.log.start.Add(ln.at)).Sub(poweredOn).Seconds(), s.what)
	}
}

// allocatedBytes is how much of the sparse file path holds data.
func allocatedBytes(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// linkOrCopy puts src at dst as a hard link, or a copy when they are on
// different filesystems.
func linkOrCopy(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.Link(src, dst); err != nil {
		copyFile(t, src, dst)
	}
}

// detour is a disk boot's way through the firmware after proxy-DHCP
// declined its first DHCP request: from that request to the disk's boot
// loader starting, with the firmware's boot options on the way.
type detour struct {
	total time.Duration // declined request -> the disk's boot loader starts
	steps []timedLine   // BdsDxe and network boot lines, at times since the declined request
}

// lines are grep-able DETOUR lines for the phase report.
func (d detour) lines(run string) []string {
	out := []string{fmt.Sprintf("DETOUR %s declined-dhcp-to-disk %ds", run, int(d.total.Round(time.Second).Seconds()))}
	for _, s := range d.steps {
		out = append(out, fmt.Sprintf("DETOUR %s +%5.1fs %s", run, s.at.Seconds(), s.text))
	}
	return out
}

// declineRE is bty-web's log line for a declined firmware DHCP request
// of the lab's guest.
var declineRE = regexp.MustCompile(`msg="proxy-DHCP left a PXE client without a boot file.*mac=` + regexp.QuoteMeta(pxeMAC))

// diskBootDetour waits for bty-web to decline v's firmware DHCP request
// (its log lines from mark on) and for the firmware to start the disk's
// boot loader, and measures the detour in between: OVMF's defaults try
// PXE over IPv4 (no boot file offered: it gives up), then PXE over
// IPv6 and HTTP boot over IPv4 and IPv6 (nothing on this network serves
// them) before the disk. The firmware prints each option's ">>Start ..."
// line with its failure, so a step's time is when that option gave up.
func diskBootDetour(t *testing.T, w *btyWeb, v *vm, mark int) detour {
	t.Helper()
	deadline := time.Now().Add(4 * time.Minute)
	var declined timedLine
	for {
		ch := w.log.wait()
		if ln, _, ok := w.log.find(declineRE, mark); ok {
			declined = ln
			break
		}
		if v.exited() {
			t.Fatalf("QEMU %s: ended (%s) before bty-web declined its DHCP request; serial tail:\n%s", v.name, v.status(), tail(v.serial.Timed(), 4000))
		}
		select {
		case <-ch:
		case <-time.After(time.Until(deadline)):
			t.Fatalf("QEMU %s: bty-web did not decline the firmware's DHCP request within 4 minutes (want no boot file for a machine whose next boot is its disk); bty-web's log since:\n%s",
				v.name, tail(w.log.Timed(), 4000))
		case <-time.After(time.Second):
		}
	}
	// On v's clock: when the first DHCP request of the boot reached
	// bty-web.
	at := w.log.start.Add(declined.at).Sub(v.start)
	t.Logf("QEMU %s [%6.1fs] bty-web: %s", v.name, at.Seconds(), declined.text)

	var d detour
	stepRE := regexp.MustCompile(`BdsDxe: |>>Start (PXE|HTTP)|PXE-E\d+|Linux version`)
	for {
		ln, i, err := v.waitLine(stepRE, v.cursor, 8*time.Minute)
		if err != nil {
			t.Fatalf("QEMU %s: the firmware did not start the disk within 8 minutes of the declined DHCP request (%v); serial tail:\n%s",
				v.name, err, tail(v.serial.Timed(), 4000))
		}
		v.cursor = i + 1
		d.steps = append(d.steps, timedLine{ln.at - at, ln.text})
		if strings.Contains(ln.text, `"UiApp"`) {
			t.Fatalf("QEMU %s: the firmware went to its boot manager (UiApp) instead of the disk: %s", v.name, ln.text)
		}
		// The disk's boot option: the first one started that is not a
		// network boot (OVMF names those "UEFI PXEv4 (MAC:...)",
		// "UEFI HTTPv6 (MAC:...)", ...).
		if strings.Contains(ln.text, "BdsDxe: starting ") && !strings.Contains(ln.text, "PXE") && !strings.Contains(ln.text, "HTTP") {
			d.total = ln.at - at
			break
		}
	}
	t.Logf("QEMU %s: detour from the declined DHCP request to the disk: %s", v.name, d.total.Round(100*time.Millisecond))
	for _, s := range d.steps {
		t.Logf("  +%6.1fs %s", s.at.Seconds(), s.text)
	}
	return d
}

// checkNoNetboot checks that v's boot (bty-web's log from mark on) went
// to the disk with nothing from bty but the one declined DHCP request:
// no offer to its MAC, no TFTP, no iPXE, no /pxe/MAC script; the
// firmware's retries were ignored without asking again (the decline
// window).
func checkNoNetboot(t *testing.T, w *btyWeb, v *vm, mark int) {
	t.Helper()
	var lines []timedLine
	w.log.mu.Lock()
	if mark < len(w.log.lines) {
		lines = append(lines, w.log.lines[mark:]...)
	}
	w.log.mu.Unlock()
	declines, retries := 0, 0
	mac := regexp.QuoteMeta(pxeMAC)
	bad := regexp.MustCompile(`msg="proxy-DHCP answered a PXE client" .*mac=` + mac + `|msg="TFTP sent"|path=/pxe/|path=/pxe-bootstrap`)
	retry := regexp.MustCompile(`msg="proxy-DHCP ignored a packet" .*mac=` + mac + ` reason=declined`)
	for _, ln := range lines {
		switch {
		case declineRE.MatchString(ln.text):
			declines++
		case retry.MatchString(ln.text):
			retries++
		case bad.MatchString(ln.text):
			t.Errorf("QEMU %s: the disk boot went through bty: %s", v.name, ln.text)
		}
	}
	if declines != 1 {
		t.Errorf("QEMU %s: bty-web declined the guest's DHCP requests %d times, want once (its retries in the same boot are ignored)", v.name, declines)
	}
	if len(v.serial.all(regexp.MustCompile(`iPXE|bty-live: starting`))) > 0 {
		t.Errorf("QEMU %s: iPXE or the live env ran on a disk boot", v.name)
	}
	t.Logf("QEMU %s: one declined DHCP request, %d retries ignored in the decline window", v.name, retries)
}
