package e2e

// TestFleetIPMI (BTY_VMTEST=1, root) is the fleet keeping itself fresh
// with no one at a console, end to end: the real bty-web and bty-ctl in
// the lab's server namespace, two UEFI QEMU guests (A and B), each
// behind its own OpenIPMI ipmi_sim BMC (chassis_control is this test
// binary, see chassis in ipmi_test.go), OVMF at its defaults, the disk
// first in each guest's boot order.
//
// Both start powered off with blank disks, labelled role=lab.
//
//  1. A rollout of the Debian image across role=lab (canary 1): bty-web
//     assigns and reflashes A alone first (pxe-once+on through its BMC;
//     the live env flashes it with the record's seed; the OS phones
//     home); A is cijoe-online, so the rollout also waits for its
//     workflow run (the stand-in cijoe over real SSH, with the key
//     bty-web made), which becomes A's known-good baseline. Only then
//     is B reflashed. Every flash is a history row with trigger
//     rollout and the rollout's id.
//  2. A's OS is made unhealthy (its sshd, the health check's port, is
//     disabled for good, by a unit A's own seed installed, which its
//     default user triggers over SSH): bty-web's health watch sees the check fail,
//     and after health_fail_after recovers it with no command typed:
//     a power cycle through the BMC (sshd stays off), then, after the
//     cycle wait, a reflash to A's known-good baseline (pxe-once+cycle;
//     a stranger mid-cycle gets nothing), after which A is healthy
//     again. Each step is a row of A's history. The reflash is a delta
//     flash: only the chunks A's OS changed are fetched and written.
//  3. Meanwhile, a CI job's own reflash of B (bty-ctl machines reflash
//     --wait, with a host name for this flash only) while B's OS runs:
//     pxe-once+cycle, each phase printed, the new OS up with that name,
//     a delta flash too. A's recovery touches nothing of B's.
//  4. B's BMC password is rotated behind bty-web's back, and a CI
//     system reports B bad: every flash recovery starts fails at the BMC
//     (the password is never shown), a backoff between them, and B ends
//     quarantined after the cap, its running OS never touched; A is
//     untouched. An operator sets the password again and clears B.

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/fleet"
	"github.com/dustin/go-humanize"
)

// The two guests: A sorts first (the rollout's canary).
const (
	fleetMACA  = ipmiMAC
	fleetMACB  = "52:54:00:b7:e2:03"
	fleetBMC_A = "127.0.0.1:6623"
	fleetBMC_B = "127.0.0.1:6624"
)

// guest is one machine of the lab: its hardware and its BMC.
type guest struct {
	name, mac, bmc, password string
	hw                       *chassis
}

func newGuest(t *testing.T, l *lab, tmp, name, mac, bmc string) *guest {
	t.Helper()
	dir := filepath.Join(tmp, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "target.raw")
	sparseFile(t, disk, targetSize)
	g := &guest{name: name, mac: mac, bmc: bmc, password: "e2e-bmc-" + shortID(t)}
	g.hw = newChassis(t, filepath.Join(dir, "chassis.sock"), []string{
		"-netdev", "tap,id=n0,ifname=" + l.addTap(t) + ",script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,mac=" + mac + ",romfile=,bootindex=%NIC%",
		"-drive", "if=none,id=d0,format=raw,file=" + disk,
		"-device", "virtio-blk-pci,drive=d0,bootindex=%DISK%",
		"-device", "virtio-rng-pci",
	}, l.ns, copyVars(t, dir))
	// The caller shuts the chassis down (defer) before the test's
	// cleanups kill its QEMU runs: a run killed with the power on would
	// look like a guest that rebooted.
	startBMC(t, l.srv, filepath.Join(dir, "bmc"), bmc, g.hw.sock, g.password)
	return g
}

// powerFlags are machines set's flags for g's BMC (the password on
// stdin).
func (g *guest) powerFlags() []string {
	return []string{"--power-driver", "ipmi", "--power-address", g.bmc, "--power-user", ipmiUser, "--power-password-stdin",
		// ipmi_sim lacks the SHA-256 suites the library tries first.
		"--power-cipher-suite", "3"}
}

func TestFleetIPMI(t *testing.T) {
	needVMTest(t, "two UEFI guests behind OpenIPMI's ipmi_sim BMCs and the real bty-web: a rollout (canary, then the other), a health failure recovered by a power cycle and a reflash to known-good, meanwhile a CI job's reflash --wait of the other, then a guest quarantined after its flashes fail (about 12 minutes under TCG)",
		toolQEMU, toolOVMF, toolIP, toolDnsmasq, toolIPXE, toolZstd, toolIPMISim, toolSSH)
	repo := repoRoot(t)
	tmp := t.TempDir()

	bootDir := filepath.Join(tmp, "boot")
	runBtyMedia(t, repo, "netboot", "--out", bootDir, "--cache", filepath.Join(repo, ".cache", "bty-media"))
	var phases []phase
	defer func() { reportPhases(t, phases) }()

	img, sum, _ := debianImage(t, repo)
	zst := zstdOf(t, img, sum)
	imageRoot := filepath.Join(tmp, "images")
	if err := os.MkdirAll(imageRoot, 0o755); err != nil {
		t.Fatal(err)
	}
	linkOrCopy(t, zst, filepath.Join(imageRoot, pxeImageName))

	l := newLab(t, true)
	// Recovery's waits, shortened for the lab (the defaults are 10m, 5m
	// and 3: docs/reference.md, "Failure recovery").
	w := startBtyWeb(t, repo, l, tmp, bootDir, imageRoot,
		"BTY_RECOVERY_CYCLE_WAIT=45s", "BTY_RECOVERY_BACKOFF=15s", "BTY_RECOVERY_REFLASHES=2")
	waitImageHashed(t, w, pxeImageName, sum)
	w.ctlRun(t, w.password+"\n", "login", "--password-stdin")

	a := newGuest(t, l, tmp, "a", fleetMACA, fleetBMC_A)
	defer a.hw.shutdown()
	b := newGuest(t, l, tmp, "b", fleetMACB, fleetBMC_B)
	defer b.hw.shutdown()

	token := fmt.Sprintf("fleet-%d", time.Now().UnixNano())
	userData := filepath.Join(tmp, "user-data.yaml")
	ud := "#cloud-config\nruncmd:\n  - [sh, -c, 'echo \"BTY-PROOF " + token + "\" > /dev/ttyS0']\n"
	if err := os.WriteFile(userData, []byte(ud), 0o644); err != nil {
		t.Fatal(err)
	}
	// A's seed also installs the fault the test injects later: once its
	// default user (the image has no sudo) touches ~/break-health, root
	// disables and stops sshd, the health check's port, for good.
	userDataA := filepath.Join(tmp, "user-data-a.yaml")
	udA := "#cloud-config\nwrite_files:\n" +
		"  - path: /etc/systemd/system/bty-break-health.path\n    content: |\n      [Path]\n      PathExists=/home/debian/break-health\n" +
		"  - path: /etc/systemd/system/bty-break-health.service\n    content: |\n      [Service]\n      Type=oneshot\n      ExecStart=/bin/systemctl disable --now ssh.service\n" +
		"runcmd:\n  - [sh, -c, 'echo \"BTY-PROOF " + token + "\" > /dev/ttyS0']\n" +
		"  - [systemctl, start, bty-break-health.path]\n"
	if err := os.WriteFile(userDataA, []byte(udA), 0o644); err != nil {
		t.Fatal(err)
	}
	onlineWorkflows(t, w, tmp, token)
	// A: cijoe-online, health-watched. B: cloud-init, not watched. No
	// image yet: the rollout assigns it.
	w.ctlRun(t, a.password+"\n", append([]string{"machines", "set", a.mac, "--policy", "local", "--label", "role=lab",
		"--provisioning", "cijoe-online", "--cijoe-workflow", "good.yaml", "--ready-check", "phone-home",
		"--hostname", "fleet-a", "--user-data", userDataA, "--health-every", "5s", "--health-fail-after", "20s"}, a.powerFlags()...)...)
	w.ctlRun(t, b.password+"\n", append([]string{"machines", "set", b.mac, "--policy", "local", "--label", "role=lab",
		"--provisioning", "cloud-init", "--ready-check", "phone-home", "--hostname", "fleet-b", "--user-data", userData}, b.powerFlags()...)...)
	for _, g := range []*guest{a, b} {
		// ipmi_sim opens its port a moment after it starts.
		for deadline := time.Now().Add(15 * time.Second); ; {
			out, err := w.ctlTry("", "machines", "power", g.mac, "status")
			if err == nil && strings.Contains(out, "power off") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("guest %s's BMC at %s: %q, %v; want power off", g.name, g.bmc, out, err)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}

	// 1. The rollout: A (the canary) alone, its run, then B.
	logMark := w.log.mark()
	res := w.ctlAsync("", "rollout", "start", "--selector", "role=lab", "--image", pxeImageName, "--canary", "1", "--max-parallel", "1", "--wait")
	pxe, va := a.hw.waitRun(t, 0, 2*time.Minute)
	if !pxe {
		t.Fatalf("A's first power-on booted the disk first: the BMC's one-time PXE boot was not set (BMC calls %q)", a.hw.sets())
	}
	if first, _, err := va.waitLine(regexp.MustCompile(`BdsDxe: starting `), 0, 3*time.Minute); err != nil || !strings.Contains(first.text, "PXE") {
		t.Errorf("QEMU %s: the firmware's first boot option %q (%v), want the NIC's PXE", va.name, first.text, err)
	}
	va.expect(t, `bty-live: starting \(netboot`, 5*time.Minute)
	va.expect(t, `bty-live: seeded bty-web's SSH key for the image's default user debian`, 8*time.Minute)
	va.expect(t, `bty-live: reported done to `+regexp.QuoteMeta(w.url), 3*time.Minute)
	pxe, osA := a.hw.waitRun(t, 1, 3*time.Minute)
	if pxe {
		t.Errorf("QEMU %s: the reboot after the flash had the NIC first; the one-time PXE boot must be used up", osA.name)
	}
	checkOSBoot(t, osA, "fleet-a", token)
	fa := waitFlashEnd(t, w, a.mac, 0, 8*time.Minute)
	checkFlash(t, fa, fleet.TriggerRollout, "pxe-once+on", fleet.FlashReady)
	checkChain(t, w, logMark, va.start, seedAndReady(a.mac))
	checkNoDetour(t, w, a.mac, osA, logMark)
	if got := strings.Join(a.hw.sets(), ", "); got != "set boot pxe, set power 1" {
		t.Errorf("A's BMC chassis calls %q, want set boot pxe, set power 1", got)
	}
	runA, logA := waitOnlineRun(t, w, a.mac, fa, 5*time.Minute)
	checkGoodRun(t, w, a.mac, token, fa, runA, logA)
	phases = append(phases, flashPhases("rollout-a", fa)...)
	phases = append(phases, phase{"rollout-a-ready-to-run-end", runA.EndedAt.Sub(*fa.ReadyAt)})

	pxe, vb := b.hw.waitRun(t, 0, 3*time.Minute)
	if !pxe {
		t.Fatalf("B's first power-on booted the disk first (BMC calls %q)", b.hw.sets())
	}
	vb.expect(t, `bty-live: reported done to `+regexp.QuoteMeta(w.url), 10*time.Minute)
	_, osB := b.hw.waitRun(t, 1, 3*time.Minute)
	checkOSBoot(t, osB, "fleet-b", token)
	out := res.wait(t, 10*time.Minute, 0)
	fb := waitFlashEnd(t, w, b.mac, 0, 5*time.Minute)
	checkFlash(t, fb, fleet.TriggerRollout, "pxe-once+on", fleet.FlashReady)
	phases = append(phases, flashPhases("rollout-b", fb)...)
	if fa.TriggerID == 0 || fb.TriggerID != fa.TriggerID {
		t.Errorf("the rollout's flashes: trigger ids %d and %d, want the rollout's, the same", fa.TriggerID, fb.TriggerID)
	}
	// The canary gate: B was asked for only after A's run succeeded.
	if !fb.RequestedAt.After(*runA.EndedAt) {
		t.Errorf("B's flash was requested at %s, before A's run ended at %s: the canary did not go alone", fb.RequestedAt.Format(time.RFC3339), runA.EndedAt.Format(time.RFC3339))
	}
	if i, j := strings.Index(out, a.mac), strings.Index(out, b.mac); i < 0 || j < 0 || j < i {
		t.Errorf("rollout start --wait output does not show A before B:\n%s", out)
	}
	var ro api.Rollout
	if err := json.Unmarshal([]byte(w.ctlRun(t, "", "rollout", "status", strconv.FormatInt(fa.TriggerID, 10), "--json")), &struct {
		Rollout *api.Rollout `json:"rollout"`
	}{&ro}); err != nil || ro.State != fleet.RolloutSucceeded {
		t.Errorf("rollout %d: %+v (%v), want succeeded", fa.TriggerID, ro, err)
	}
	for _, g := range []*guest{a, b} {
		if m := w.machineGet(t, g.mac); m.Image != pxeImageName {
			t.Errorf("guest %s's record: image %q, want the rollout's %s", g.name, m.Image, pxeImageName)
		}
	}

	// 2. A's OS stops answering its health check (sshd disabled, so a
	// power cycle does not bring it back); bty-web recovers it alone.
	// Meanwhile (3.) a CI job reflashes B while its OS runs: bty-ctl
	// machines reflash --wait, each phase as it comes.
	waitMachine(t, w, a.mac, "A healthy", 2*time.Minute, func(m api.Machine) bool { return m.Health != nil && m.Health.OK })
	bSets, bRuns := len(b.hw.sets()), len(b.hw.runsSoFar())
	bActions := actionKinds(t, w, b.mac)
	jobMark := w.log.mark()
	job := w.ctlAsync("", "machines", "reflash", b.mac, "--hostname", "fleet-b-job", "--wait", "--timeout", "15m")
	aSets := len(a.hw.sets())
	broke := time.Now()
	sshGuest(t, w, tmp, fa.OSAddress, "touch ~/break-health && echo touched")
	logMark = w.log.mark()
	m := waitMachine(t, w, a.mac, "A's recovery power-cycled it", 2*time.Minute, func(m api.Machine) bool {
		return m.Recovery != nil && m.Recovery.Step == fleet.StepCycle
	})
	if !strings.Contains(m.Recovery.Reason, "health check failing") {
		t.Errorf("A's recovery reason %q, want the failing health check", m.Recovery.Reason)
	}
	pxe, osA2 := a.hw.waitRun(t, 2, 2*time.Minute)
	if pxe || !osA.exited() {
		t.Errorf("recovery's power cycle: the NIC first %v, the old run ended %v; want a plain cycle to the disk", pxe, osA.exited())
	}
	// sshd stays off after the cycle: the reflash to known-good.
	pxe, va3 := a.hw.waitRun(t, 3, 4*time.Minute)
	if !pxe {
		t.Fatalf("recovery's reflash booted the disk first (BMC calls %q)", a.hw.sets()[aSets:])
	}
	if !osA2.exited() {
		t.Errorf("QEMU %s still runs after the reflash's power cycle", osA2.name)
	}
	cmdline := va3.expect(t, `Command line: .* bty\.cycle=[0-9a-f]{32}\b`, 5*time.Minute)
	cycle := regexp.MustCompile(`bty\.cycle=([0-9a-f]{32})`).FindStringSubmatch(cmdline.text)[1]
	va3.expect(t, `bty-live: starting \(netboot`, 3*time.Minute)
	stranger(t, w, a.mac, cycle, "recovery's reflash")
	va3.expect(t, `bty-live: reported done to `+regexp.QuoteMeta(w.url), 8*time.Minute)
	_, osA4 := a.hw.waitRun(t, 4, 3*time.Minute)
	checkOSBoot(t, osA4, "fleet-a", token)
	fr := waitFlashEnd(t, w, a.mac, fb.ID, 8*time.Minute)
	checkFlash(t, fr, fleet.TriggerFailure, "pxe-once+cycle", fleet.FlashReady)
	checkChain(t, w, logMark, va3.start, seedAndReady(a.mac))
	if fr.KnownGoodRun != runA.ID || !strings.Contains(fr.Cause, "health check failing") {
		t.Errorf("recovery's flash: known-good run %d, cause %q; want run %d's baseline and the failing check", fr.KnownGoodRun, fr.Cause, runA.ID)
	}
	phases = append(phases, flashPhases("recovery-a", fr)...)
	// The second flash of A is a delta flash: bty-web built the image's
	// chunk store, the disk holds the image A's OS ran on, so only the
	// chunks the OS changed are fetched and written.
	zstSize := fileSize(t, zst)
	t.Logf("A's flashes, fetch to done: first %s (fetched %s, wrote %s, %d/%d data chunks equal); second %s (fetched %s, wrote %s, %d/%d data chunks equal); the image file is %s",
		fa.DoneAt.Sub(*fa.FetchAt).Round(time.Second), humanize.IBytes(uint64(fa.BytesFetched)), humanize.IBytes(uint64(fa.BytesWritten)), fa.ChunksEqual, fa.ChunksTotal-fa.ChunksZero,
		fr.DoneAt.Sub(*fr.FetchAt).Round(time.Second), humanize.IBytes(uint64(fr.BytesFetched)), humanize.IBytes(uint64(fr.BytesWritten)), fr.ChunksEqual, fr.ChunksTotal-fr.ChunksZero,
		humanize.IBytes(uint64(zstSize)))
	if fr.ChunksEqual == 0 || fr.BytesFetched == 0 || fr.BytesFetched*10 > zstSize || fr.BytesWritten*4 > fa.BytesWritten {
		t.Errorf("A's recovery reflash: %d of %d chunks equal, fetched %d bytes of a %d-byte image file, wrote %d bytes (the first flash %d); want a delta flash fetching and writing a fraction",
			fr.ChunksEqual, fr.ChunksTotal, fr.BytesFetched, zstSize, fr.BytesWritten, fa.BytesWritten)
	}
	m = waitMachine(t, w, a.mac, "A recovered and healthy", 3*time.Minute, func(m api.Machine) bool {
		return m.Recovery == nil && m.Health != nil && m.Health.OK && m.Health.Since.After(*fr.ReadyAt)
	})
	if got := actionKinds(t, w, a.mac); got != "failure,power-cycle,reflash,recovered" {
		t.Errorf("A's history: %s, want failure,power-cycle,reflash,recovered", got)
	}
	phases = append(phases, phase{"recovery-a-broken-to-healthy", m.Health.Since.Sub(broke)})
	// B's own job went on meanwhile; A's recovery did nothing to B.
	if got := actionKinds(t, w, b.mac); got != bActions {
		t.Errorf("B's recovery history changed during A's recovery: %s (was %s)", got, bActions)
	}

	// 3. The CI job's reflash of B, started before A broke.
	pxe, vb2 := b.hw.waitRun(t, bRuns, 2*time.Minute)
	if !pxe || !osB.exited() {
		t.Fatalf("the job's reflash: the NIC first %v, the old OS ended %v (BMC calls %q)", pxe, osB.exited(), b.hw.sets()[bSets:])
	}
	vb2.expect(t, `bty-live: provisioning \(cloud-init\): .*local-hostname fleet-b-job\b`, 8*time.Minute)
	vb2.expect(t, `bty-live: reported done to `+regexp.QuoteMeta(w.url), 3*time.Minute)
	_, osB2 := b.hw.waitRun(t, bRuns+1, 3*time.Minute)
	out = job.wait(t, 12*time.Minute, 0)
	fj := checkReadyFlash(t, w, b.mac, out, "pxe-once+cycle")
	if got := strings.Join(b.hw.sets()[bSets:], ", "); got != "set boot pxe, set power 0, set power 1" {
		t.Errorf("the job's reflash: B's chassis calls %q, want set boot pxe, set power 0, set power 1 (and nothing from A's recovery)", got)
	}
	checkOSBoot(t, osB2, "fleet-b-job", token)
	checkChain(t, w, jobMark, vb2.start, seedAndReady(b.mac))
	checkNoDetour(t, w, b.mac, osB2, jobMark)
	phases = append(phases, flashPhases("job-b", fj)...)
	t.Logf("B's flashes, fetch to done: first %s (fetched %s, %d/%d data chunks equal); the job's %s (fetched %s, wrote %s, %d/%d data chunks equal)",
		fb.DoneAt.Sub(*fb.FetchAt).Round(time.Second), humanize.IBytes(uint64(fb.BytesFetched)), fb.ChunksEqual, fb.ChunksTotal-fb.ChunksZero,
		fj.DoneAt.Sub(*fj.FetchAt).Round(time.Second), humanize.IBytes(uint64(fj.BytesFetched)), humanize.IBytes(uint64(fj.BytesWritten)), fj.ChunksEqual, fj.ChunksTotal-fj.ChunksZero)
	if fj.ChunksEqual == 0 || fj.BytesFetched*10 > fb.BytesFetched || fj.BytesWritten*4 > fb.BytesWritten {
		t.Errorf("the job's reflash of B: %d of %d chunks equal, fetched %d bytes (the first flash %d), wrote %d (%d); want a delta flash",
			fj.ChunksEqual, fj.ChunksTotal, fj.BytesFetched, fb.BytesFetched, fj.BytesWritten, fb.BytesWritten)
	}

	// 4. B's BMC password changes behind bty-web's back; a CI system
	// reports B bad. Every flash fails at the BMC: quarantine.
	const wrong = "Rotated-pa55word-Q"
	w.ctlRun(t, wrong+"\n", "machines", "set", b.mac, "--power-password-stdin")
	aSets, aRuns, aActions := len(a.hw.sets()), len(a.hw.runsSoFar()), actionKinds(t, w, a.mac)
	bSets = len(b.hw.sets())
	w.ctlRun(t, "", "machines", "report-failure", b.mac, "--reason", "CI job 42: the NIC flapped")
	m = waitMachine(t, w, b.mac, "B quarantined", 4*time.Minute, func(m api.Machine) bool { return m.Quarantine != nil })
	if !strings.Contains(m.Quarantine.Reason, "2 reflashes") || !strings.Contains(m.Quarantine.Reason, "CI job 42") ||
		!strings.Contains(m.Quarantine.Reason, "refused the credentials") {
		t.Errorf("B's quarantine: %q", m.Quarantine.Reason)
	}
	if got := actionKinds(t, w, b.mac); got != "failure,power-cycle,reflash,backoff,reflash,quarantine" {
		t.Errorf("B's history: %s, want failure,power-cycle,reflash,backoff,reflash,quarantine", got)
	}
	hist := flashHistory(t, w, b.mac)
	if len(hist) != 4 || hist[0].Trigger != fleet.TriggerFailure || hist[1].Trigger != fleet.TriggerFailure ||
		hist[0].Result != fleet.FlashFailed || !strings.Contains(hist[0].Reason, "refused the credentials") {
		t.Errorf("B's flashes: %+v, want the rollout's, the job's, then two failed recovery reflashes", hist)
	}
	if got := b.hw.sets()[bSets:]; len(got) != 0 || osB2.exited() {
		t.Errorf("B's BMC did %q with a wrong password, or its OS ended (%v)", got, osB2.exited())
	}
	if strings.Contains(w.log.String(), wrong) {
		t.Errorf("the BMC password shows in bty-web's log")
	}
	if got := actionKinds(t, w, a.mac); got != aActions || len(a.hw.sets()) != aSets || len(a.hw.runsSoFar()) != aRuns || osA4.exited() {
		t.Errorf("A was touched while B failed: history %s (was %s), BMC calls %d→%d, QEMU runs %d→%d", got, aActions, aSets, len(a.hw.sets()), aRuns, len(a.hw.runsSoFar()))
	}
	if out := w.ctlRun(t, "", "machines", "get", b.mac); !strings.Contains(out, "QUARANTINED") {
		t.Errorf("machines get does not show the quarantine:\n%s", out)
	}
	// The operator fixes the password and clears B.
	w.ctlRun(t, b.password+"\n", "machines", "set", b.mac, "--power-password-stdin")
	w.ctlRun(t, "", "machines", "clear", b.mac)
	if m := w.machineGet(t, b.mac); m.Quarantine != nil || m.Recovery != nil {
		t.Errorf("after clearing: quarantine %+v recovery %+v", m.Quarantine, m.Recovery)
	}

	t.Logf("A's BMC chassis calls:\n%s\nB's:\n%s", strings.Join(a.hw.calls(), "\n"), strings.Join(b.hw.calls(), "\n"))
}

// checkReadyFlash checks a reflash --wait that succeeded: its output
// names each phase, and mac's newest flash in the history is a ready
// demand flash, powered how, with its phase times in order and the OS's
// address. It returns that flash.
func checkReadyFlash(t *testing.T, w *btyWeb, mac, out, how string) fleet.Flash {
	t.Helper()
	for _, ph := range []string{"requested", "power", "pxe", "fetch", "done", "ready"} {
		if !regexp.MustCompile(`(?m)^\s+\+\S+\s+` + ph + `\b`).MatchString(out) {
			t.Errorf("reflash --wait printed no %s phase:\n%s", ph, out)
		}
	}
	if !strings.Contains(out, "ready in ") || !regexp.MustCompile(`\bpower\s+`+regexp.QuoteMeta(how)+`\b`).MatchString(out) {
		t.Errorf("reflash --wait output lacks the power (%s) or the final ready line:\n%s", how, out)
	}
	f := flashHistory(t, w, mac)[0]
	checkFlash(t, f, fleet.TriggerDemand, how, fleet.FlashReady)
	t.Logf("flash %d: %s, %s, OS at %s", f.ID, f.Power, f.Result, f.OSAddress)
	return f
}

// waitFlashEnd waits for mac's newest flash, newer than after, to end
// and returns it.
func waitFlashEnd(t *testing.T, w *btyWeb, mac string, after int64, timeout time.Duration) fleet.Flash {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m := w.machineGet(t, mac)
		if f := m.Flash; f != nil && f.ID > after && !f.Running() {
			t.Logf("flash %d of %s: %s (%s), trigger %s %d, power %s, reason %q", f.ID, mac, f.Result, f.Phase, f.Trigger, f.TriggerID, f.Power, f.Reason)
			return *f
		}
		if time.Now().After(deadline) {
			t.Fatalf("no flash of %s after %d ended within %s: %+v", mac, after, timeout, m.Flash)
		}
		time.Sleep(2 * time.Second)
	}
}

// checkFlash checks a flash's trigger, how it was powered, its result,
// and its phase times in order.
func checkFlash(t *testing.T, f fleet.Flash, trigger fleet.Trigger, how string, result fleet.FlashResult) {
	t.Helper()
	if f.Trigger != trigger || f.Power != how || f.Result != result {
		t.Errorf("flash %d: trigger %s, power %q, result %s; want %s, %s, %s (reason %q)", f.ID, f.Trigger, f.Power, f.Result, trigger, how, result, f.Reason)
	}
	prev, prevName := f.RequestedAt, "requested_at"
	for _, p := range []struct {
		name string
		at   *time.Time
	}{{"power_at", f.PowerAt}, {"pxe_at", f.PXEAt}, {"fetch_at", f.FetchAt}, {"done_at", f.DoneAt}, {"ready_at", f.ReadyAt}} {
		switch {
		case p.at == nil:
			t.Errorf("flash %d: no %s", f.ID, p.name)
		case p.at.Before(prev):
			t.Errorf("flash %d: %s before %s", f.ID, p.name, prevName)
		default:
			prev, prevName = *p.at, p.name
		}
	}
	if f.OSAddress == "" {
		t.Errorf("flash %d: no os_address", f.ID)
	}
}

// waitMachine polls mac's record until ok holds (what names it).
func waitMachine(t *testing.T, w *btyWeb, mac, what string, timeout time.Duration, ok func(api.Machine) bool) api.Machine {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m := w.machineGet(t, mac)
		if ok(m) {
			t.Logf("%s: state %s", what, m.State())
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: health %+v recovery %+v quarantine %+v flash %+v", what, timeout, m.Health, m.Recovery, m.Quarantine, m.Flash)
		}
		time.Sleep(2 * time.Second)
	}
}

// actionKinds is mac's automation history, oldest first, as
// "failure,power-cycle,...".
func actionKinds(t *testing.T, w *btyWeb, mac string) string {
	t.Helper()
	out := w.ctlRun(t, "", "machines", "actions", mac, "--json", "--limit", "100")
	var doc api.ActionPage
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("machines actions --json: %v\n%s", err, out)
	}
	var kinds []string
	for i := len(doc.Actions) - 1; i >= 0; i-- {
		a := doc.Actions[i]
		kinds = append(kinds, string(a.Action))
		t.Logf("%s %s: %s (%s) flash %d", mac, a.Action, a.Detail, a.Reason, a.FlashID)
	}
	return strings.Join(kinds, ",")
}

// sshGuest runs command on the guest at addr as the image's default
// user with bty-web's key, from the server namespace.
func sshGuest(t *testing.T, w *btyWeb, tmp, addr, command string) {
	t.Helper()
	key := filepath.Join(tmp, "state", "keys", "id_ed25519")
	cmd := exec.Command("ip", "netns", "exec", w.ns, "ssh", "-i", key, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=20", "debian@"+addr, command)
	out, err := cmd.CombinedOutput()
	t.Logf("ssh debian@%s %q: %v\n%s", addr, command, err, out)
	if err != nil {
		t.Fatalf("ssh to the guest at %s: %v", addr, err)
	}
}
