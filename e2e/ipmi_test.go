package e2e

// TestIPMIReflash (BTY_VMTEST=1, root) is a one-shot reflash through a
// real IPMI BMC, end to end: the real bty-web and bty-ctl in the lab's
// server namespace, OpenIPMI's ipmi_sim beside them as the machine's
// BMC, and a UEFI QEMU guest as the machine's hardware. ipmi_sim hands
// power and boot-flag commands to its chassis_control program, which is
// this test binary (TestMain's chassis mode) passing them to the test:
// "set power 1" starts QEMU with the disk first in the boot order, or
// the NIC first once when the boot flag is pxe (the flag is then
// consumed, like firmware's one-time boot override); "set power 0" ends
// it; QEMU ending on its own (-no-reboot: the guest rebooted) starts it
// again with the power still on.
//
// The guest starts powered off with a blank disk. Flash 1: bty-ctl
// machines reflash --wait; bty-web sets the one-time PXE boot and powers
// the machine on (pxe-once+on); the live env flashes the Debian image
// with the record's cloud-init seed and reboots; the disk boots first (no
// proxy-DHCP contact, no detour), the OS comes up with the record's host
// name and phones home: the flash is ready. The machine is in
// cijoe-online mode: bty-web then runs its workflow (the stand-in cijoe,
// each step over real SSH) against the OS as the image's default user,
// with the key bty-web made and the seed's vendor-data authorised; the
// second step reads back the file the first wrote on the guest; the run
// is the machine's known-good baseline. Flash 2, while that OS runs,
// with --hostname and a workflow whose second step fails:
// pxe-once+cycle, a stranger mid-cycle is refused, the new OS has the
// new host name, the run fails with the step's status and the baseline
// stays the first run's. Flash 3: the BMC refuses a wrong password;
// the flash fails at once with that reason (never the password), the
// running OS is left alone.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/fleet"
)

const (
	ipmiMAC  = "52:54:00:b7:e2:02"
	ipmiUser = "admin"
	// ipmiAddr is the BMC's LAN address, inside the server namespace.
	ipmiAddr = "127.0.0.1:6623"
)

var toolIPMISim = tool{"ipmi_sim", "openipmi"}

func TestIPMIReflash(t *testing.T) {
	needVMTest(t, "reflashes a UEFI guest three times through OpenIPMI's ipmi_sim as its BMC and the real bty-web: power on, power cycle of the running OS, a cijoe-online workflow run after each, a refused password (about 9 minutes under TCG)",
		toolQEMU, toolOVMF, toolIP, toolDnsmasq, toolIPXE, toolZstd, toolIPMISim)
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
	w := startBtyWeb(t, repo, l, tmp, bootDir, imageRoot)
	waitImageHashed(t, w, pxeImageName, sum)
	w.ctlRun(t, w.password+"\n", "login", "--password-stdin")

	// The machine: off, a blank disk, and its BMC.
	disk := filepath.Join(tmp, "target.raw")
	sparseFile(t, disk, targetSize)
	hw := newChassis(t, filepath.Join(tmp, "chassis.sock"), []string{
		"-netdev", "tap,id=n0,ifname=" + l.addTap(t) + ",script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,mac=" + ipmiMAC + ",romfile=,bootindex=%NIC%",
		"-drive", "if=none,id=d0,format=raw,file=" + disk,
		"-device", "virtio-blk-pci,drive=d0,bootindex=%DISK%",
		"-device", "virtio-rng-pci",
	}, l.ns, copyVars(t, tmp))
	defer hw.shutdown()
	bmcPassword := "e2e-bmc-" + shortID(t)
	startBMC(t, l.srv, filepath.Join(tmp, "bmc"), hw.sock, bmcPassword)

	token := fmt.Sprintf("ipmi-%d", time.Now().UnixNano())
	userData := filepath.Join(tmp, "user-data.yaml")
	ud := "#cloud-config\nruncmd:\n  - [sh, -c, 'echo \"BTY-PROOF " + token + "\" > /dev/ttyS0']\n"
	if err := os.WriteFile(userData, []byte(ud), 0o644); err != nil {
		t.Fatal(err)
	}
	onlineWorkflows(t, w, tmp, token)
	w.ctlRun(t, bmcPassword+"\n", "machines", "set", ipmiMAC, "--policy", "local", "--image", pxeImageName,
		"--provisioning", "cijoe-online", "--cijoe-workflow", "good.yaml", "--ready-check", "phone-home",
		"--hostname", "ipmi-one", "--user-data", userData,
		"--power-driver", "ipmi", "--power-address", ipmiAddr, "--power-user", ipmiUser, "--power-password-stdin",
		// ipmi_sim lacks the SHA-256 suites the library tries first.
		"--power-cipher-suite", "3")
	// ipmi_sim opens its port a moment after it starts.
	for deadline := time.Now().Add(15 * time.Second); ; {
		out, err := w.ctlTry("", "machines", "power", ipmiMAC, "status")
		if err == nil && strings.Contains(out, "power off") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the BMC at %s: %q, %v; want power off", ipmiAddr, out, err)
		}
		time.Sleep(500 * time.Millisecond)
	}

	// Flash 1: the machine is off; the BMC sets the one-time PXE boot
	// and powers it on.
	logMark, sets := w.log.mark(), len(hw.sets())
	res := w.ctlAsync("", "machines", "reflash", ipmiMAC, "--wait", "--timeout", "20m")
	pxe1, v := hw.waitRun(t, 0, 2*time.Minute)
	if !pxe1 {
		t.Fatalf("the first power-on booted the disk first: the BMC's one-time PXE boot was not set (BMC calls %q)", hw.sets())
	}
	if first, _, err := v.waitLine(regexp.MustCompile(`BdsDxe: starting `), 0, 3*time.Minute); err != nil || !strings.Contains(first.text, "PXE") {
		t.Errorf("QEMU %s: the firmware's first boot option %q (%v), want the NIC's PXE", v.name, first.text, err)
	} else {
		t.Logf("QEMU %s [%6.1fs] %s", v.name, first.at.Seconds(), first.text)
	}
	v.expect(t, `bty-live: starting \(netboot`, 5*time.Minute)
	v.expect(t, `bty-live: seeded bty-web's SSH key for the image's default user debian`, 8*time.Minute)
	v.expect(t, `bty-live: seeded cloud-init's phone_home`, time.Minute)
	v.expect(t, `bty-live: reported done to `+regexp.QuoteMeta(w.url), 3*time.Minute)
	pxe, os1 := hw.waitRun(t, 1, 3*time.Minute)
	if pxe {
		t.Errorf("QEMU %s: the reboot after the flash had the NIC first; the one-time PXE boot must be used up", os1.name)
	}
	out := res.wait(t, 12*time.Minute, 0)
	f1 := checkReadyFlash(t, w, out, "pxe-once+on")
	if got := strings.Join(hw.sets()[sets:], ", "); got != "set boot pxe, set power 1" {
		t.Errorf("flash 1: the BMC's chassis calls %q, want set boot pxe, set power 1", got)
	}
	checkOSBoot(t, os1, "ipmi-one", token)
	checkChain(t, w, logMark, v.start, seedAndReady)
	checkNoDetour(t, w, os1, logMark)
	phases = append(phases, flashPhases("flash1", f1)...)
	// cijoe-online: the workflow runs on the booted OS over SSH with
	// bty-web's key, which the seed authorised; the run is the baseline.
	run1, log1 := waitOnlineRun(t, w, ipmiMAC, f1, 5*time.Minute)
	checkGoodRun(t, w, ipmiMAC, token, f1, run1, log1)
	phases = append(phases, phase{"flash1-ready-to-run-end", run1.EndedAt.Sub(*f1.ReadyAt)})

	// Flash 2 runs a workflow whose second step fails.
	w.ctlRun(t, "", "machines", "set", ipmiMAC, "--cijoe-workflow", "bad.yaml")

	// Flash 2: the OS runs; the BMC sets the one-time PXE boot and
	// cycles the power. A stranger mid-cycle gets nothing.
	sets = len(hw.sets())
	logMark = w.log.mark()
	res = w.ctlAsync("", "machines", "reflash", ipmiMAC, "--hostname", "ipmi-two", "--wait", "--timeout", "20m")
	pxe2, v := hw.waitRun(t, 2, 2*time.Minute)
	if !pxe2 {
		t.Fatalf("the power cycle booted the disk first: the BMC's one-time PXE boot was not set (BMC calls %q)", hw.sets()[sets:])
	}
	if !os1.exited() {
		t.Errorf("QEMU %s still runs after the power cycle", os1.name)
	}
	cmdline := v.expect(t, `Command line: .* bty\.cycle=[0-9a-f]{32}\b`, 5*time.Minute)
	cycle := regexp.MustCompile(`bty\.cycle=([0-9a-f]{32})`).FindStringSubmatch(cmdline.text)[1]
	v.expect(t, `bty-live: starting \(netboot`, 3*time.Minute)
	stranger(t, w, ipmiMAC, cycle, "mid-cycle")
	v.expect(t, `bty-live: provisioning \(cloud-init\): .*local-hostname ipmi-two\b`, 8*time.Minute)
	v.expect(t, `bty-live: reported done to `+regexp.QuoteMeta(w.url), 3*time.Minute)
	_, os2 := hw.waitRun(t, 3, 3*time.Minute)
	out = res.wait(t, 12*time.Minute, 0)
	f2 := checkReadyFlash(t, w, out, "pxe-once+cycle")
	if got := strings.Join(hw.sets()[sets:], ", "); got != "set boot pxe, set power 0, set power 1" {
		t.Errorf("flash 2: the BMC's chassis calls %q, want set boot pxe, set power 0, set power 1", got)
	}
	checkOSBoot(t, os2, "ipmi-two", token)
	checkChain(t, w, logMark, v.start, seedAndReady)
	checkNoDetour(t, w, os2, logMark)
	phases = append(phases, flashPhases("flash2", f2)...)
	run2, log2 := waitOnlineRun(t, w, ipmiMAC, f2, 5*time.Minute)
	checkBadRun(t, w, ipmiMAC, run1, run2, log2)

	// Flash 3: a wrong BMC password. The flash fails at once with the
	// BMC's refusal; the running OS is not touched.
	const wrong = "Wrong-pa55word-Y"
	w.ctlRun(t, wrong+"\n", "machines", "set", ipmiMAC, "--power-password-stdin")
	sets = len(hw.sets())
	start := time.Now()
	code, stdout, stderr := w.ctlExit("", "machines", "reflash", ipmiMAC, "--wait", "--timeout", "5m")
	took := time.Since(start)
	t.Logf("reflash with a wrong BMC password: exit %d after %s\nstdout:\n%s\nstderr:\n%s", code, took.Round(100*time.Millisecond), stdout, stderr)
	if code != 1 || took > 90*time.Second {
		t.Errorf("reflash with a wrong BMC password: exit %d after %s, want 1 within 90 s", code, took.Round(time.Second))
	}
	if !strings.Contains(stdout+stderr, "refused the credentials") {
		t.Errorf("reflash with a wrong BMC password does not say the BMC refused the credentials")
	}
	if strings.Contains(stdout+stderr, wrong) || strings.Contains(w.log.String(), wrong) {
		t.Errorf("the BMC password shows in bty-ctl's output or bty-web's log")
	}
	if got := hw.sets()[sets:]; len(got) != 0 {
		t.Errorf("with a wrong password the BMC still did %q", got)
	}
	if os2.exited() {
		t.Errorf("QEMU %s ended (%s): the failed flash touched the running machine", os2.name, os2.status())
	}
	if m := w.machineGet(t, ipmiMAC); m.Flash == nil || m.Flash.Result != fleet.FlashFailed {
		t.Errorf("after the refused password: the record's flash %+v, want failed", m.Flash)
	}
	if code := w.getStatus(t, "/healthz"); code != 200 {
		t.Errorf("GET /healthz after the refused password: %d", code)
	}
	hist := flashHistory(t, w, ipmiMAC)
	if len(hist) != 3 {
		t.Fatalf("machines history: %d flashes, want 3: %+v", len(hist), hist)
	}
	if f := hist[0]; f.Result != fleet.FlashFailed || !strings.Contains(f.Reason, "refused the credentials") || strings.Contains(f.Reason, wrong) {
		t.Errorf("the failed flash in the history: result %s, reason %q; want failed, the BMC's refusal", f.Result, f.Reason)
	} else {
		t.Logf("flash %d: %s: %s", f.ID, f.Result, f.Reason)
	}
	t.Logf("the BMC's chassis calls:\n%s", strings.Join(hw.calls(), "\n"))
}

// seedAndReady are a cloud-init flash's calls in bty-web's log after
// its PXE boot: the live env fetches the seed and reports done, the
// flashed OS phones home.
var seedAndReady = []chainStep{
	{"the live env fetches the user-data", `msg="seed served" mac=` + ipmiMAC + ` what=user-data`},
	{"the live env fetches the meta-data", `msg="seed served" mac=` + ipmiMAC + ` what=meta-data`},
	{"the live env reports done", `method=POST path=/pxe/\S+/done status=200`},
	{"the flashed OS phones home", `msg="machine ready \(phone-home\)" mac=` + ipmiMAC},
}

// checkReadyFlash checks a reflash --wait that succeeded: its output
// names each phase, and the machine's newest flash in the history is
// ready, powered how, with its phase times in order and the OS's
// address. It returns that flash.
func checkReadyFlash(t *testing.T, w *btyWeb, out, how string) fleet.Flash {
	t.Helper()
	for _, ph := range []string{"requested", "power", "pxe", "fetch", "done", "ready"} {
		if !regexp.MustCompile(`(?m)^\s+\+\S+\s+` + ph + `\b`).MatchString(out) {
			t.Errorf("reflash --wait printed no %s phase:\n%s", ph, out)
		}
	}
	if !strings.Contains(out, "ready in ") || !regexp.MustCompile(`\bpower\s+`+regexp.QuoteMeta(how)+`\b`).MatchString(out) {
		t.Errorf("reflash --wait output lacks the power (%s) or the final ready line:\n%s", how, out)
	}
	f := flashHistory(t, w, ipmiMAC)[0]
	if f.Power != how || f.Result != fleet.FlashReady || f.Trigger != fleet.TriggerDemand {
		t.Errorf("flash %d: power %q result %s trigger %s, want %s, ready, demand (reason %q)", f.ID, f.Power, f.Result, f.Trigger, how, f.Reason)
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
			t.Errorf("flash %d: %s %s before %s %s", f.ID, p.name, p.at.Format(time.RFC3339Nano), prevName, prev.Format(time.RFC3339Nano))
		default:
			prev, prevName = *p.at, p.name
		}
	}
	if f.OSAddress == "" {
		t.Errorf("flash %d: no os_address", f.ID)
	}
	t.Logf("flash %d: %s, %s, OS at %s", f.ID, f.Power, f.Result, f.OSAddress)
	return f
}

// checkOSBoot waits for the flashed OS on v to finish booting with
// hostname and for its user-data's runcmd to print token.
func checkOSBoot(t *testing.T, v *vm, hostname, token string) {
	t.Helper()
	booted := v.expect(t, `BTY-BOOTED hostname=\S+ state=\S*`, 5*time.Minute)
	if m := markerRE.FindStringSubmatch(booted.text); m == nil || m[1] != hostname {
		t.Errorf("QEMU %s: the OS booted as %q, want hostname %s", v.name, booted.text, hostname)
	}
	// cloud-init's runcmd may print before or after the boot marker.
	if len(v.serial.all(regexp.MustCompile(`BTY-PROOF `+token))) == 0 {
		v.expect(t, `BTY-PROOF `+token, 2*time.Minute)
	}
}

// checkNoDetour checks that v's boot went to the disk first: no network
// boot option in the firmware's log, and no DHCP contact of the machine
// that bty-web left without a boot file (bty-web's log from mark on).
func checkNoDetour(t *testing.T, w *btyWeb, v *vm, mark int) {
	t.Helper()
	if f := v.serial.all(regexp.MustCompile(`>>Start (PXE|HTTP)|BdsDxe: starting .*(PXE|HTTP)`)); len(f) > 0 {
		t.Errorf("QEMU %s: the disk boot tried the network first: %q", v.name, f[0].text)
	}
	decline := regexp.MustCompile(`msg="proxy-DHCP left a PXE client without a boot file.*mac=` + regexp.QuoteMeta(ipmiMAC))
	if ln, _, ok := w.log.find(decline, mark); ok {
		t.Errorf("QEMU %s: the disk boot asked proxy-DHCP: %s", v.name, ln.text)
	}
}

// flashPhases are a ready flash's steps for the phase report.
func flashPhases(name string, f fleet.Flash) []phase {
	if f.PowerAt == nil || f.PXEAt == nil || f.FetchAt == nil || f.DoneAt == nil || f.ReadyAt == nil {
		return nil
	}
	return []phase{
		{name + "-requested-to-power", f.PowerAt.Sub(f.RequestedAt)},
		{name + "-power-to-pxe", f.PXEAt.Sub(*f.PowerAt)},
		{name + "-pxe-to-fetch", f.FetchAt.Sub(*f.PXEAt)},
		{name + "-fetch-to-done", f.DoneAt.Sub(*f.FetchAt)},
		{name + "-done-to-ready", f.ReadyAt.Sub(*f.DoneAt)},
		{name + "-total", f.ReadyAt.Sub(f.RequestedAt)},
	}
}

// flashHistory is `bty-ctl machines history MAC --json`, newest first.
func flashHistory(t *testing.T, w *btyWeb, mac string) []fleet.Flash {
	t.Helper()
	out := w.ctlRun(t, "", "machines", "history", mac, "--json")
	var doc struct {
		Flashes []fleet.Flash `json:"flashes"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("bty-ctl machines history --json: %v\n%s", err, out)
	}
	if len(doc.Flashes) == 0 {
		t.Fatalf("bty-ctl machines history: no flashes")
	}
	return doc.Flashes
}

// ctlRunning is a bty-ctl run in the background.
type ctlRunning struct {
	args   []string
	done   chan struct{}
	code   int
	stdout string
	stderr string
}

// ctlAsync starts bty-ctl with args in the background (ctlExit).
func (w *btyWeb) ctlAsync(stdin string, args ...string) *ctlRunning {
	r := &ctlRunning{args: args, done: make(chan struct{})}
	go func() {
		r.code, r.stdout, r.stderr = w.ctlExit(stdin, args...)
		close(r.done)
	}()
	return r
}

// wait waits up to timeout for r to end with exit code want and returns
// its stdout.
func (r *ctlRunning) wait(t *testing.T, timeout time.Duration, want int) string {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(timeout):
		t.Fatalf("bty-ctl %s: still running after %s", strings.Join(r.args, " "), timeout)
	}
	t.Logf("bty-ctl %s: exit %d\n%s%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
	if r.code != want {
		t.Fatalf("bty-ctl %s: exit %d, want %d", strings.Join(r.args, " "), r.code, want)
	}
	return r.stdout
}

// ---------------------------------------------------------------------
// The machine behind the BMC.

// chassis is the guest's hardware as ipmi_sim's chassis_control program
// sees it (through TestMain's chassis mode and the Unix socket sock): a
// power state, a boot flag and the QEMU runs. One worker goroutine
// starts and stops QEMU, in the order asked.
type chassis struct {
	t    *testing.T
	sock string
	ln   net.Listener
	args []string // QEMU's machine, with %NIC% and %DISK% for the boot order
	ns   string
	vars string

	mu      sync.Mutex
	on      bool
	boot    string
	log     []string // every call, timed
	setLog  []string // the set calls
	runs    []chassisRun
	changed chan struct{}

	acts  chan chassisAct
	quit  chan struct{}
	ended chan struct{}
	conns sync.WaitGroup
}

type chassisRun struct {
	v        *vm
	pxeFirst bool
}

type chassisAct struct {
	on, off bool
	exited  *vm
}

func newChassis(t *testing.T, sock string, args []string, ns, vars string) *chassis {
	t.Helper()
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c := &chassis{t: t, sock: sock, ln: ln, args: args, ns: ns, vars: vars, boot: "default",
		changed: make(chan struct{}), acts: make(chan chassisAct, 64), quit: make(chan struct{}), ended: make(chan struct{})}
	go c.serve()
	go c.work()
	return c
}

// shutdown stops serving, powers off and waits for the worker: no
// goroutine of the chassis outlives the test.
func (c *chassis) shutdown() {
	c.ln.Close()
	c.conns.Wait()
	close(c.quit)
	<-c.ended
}

func (c *chassis) serve() {
	start := time.Now()
	for {
		conn, err := c.ln.Accept()
		if err != nil {
			return
		}
		c.conns.Add(1)
		go func() {
			defer c.conns.Done()
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			line, err := bufio.NewReader(conn).ReadString('\n')
			if err != nil {
				return
			}
			fmt.Fprint(conn, c.call(strings.Fields(line), time.Since(start)))
		}()
	}
}

// call runs one chassis_control command and returns its output: "get
// PARAM..." prints PARAM:VALUE lines; "set PARAM VALUE..." sets.
func (c *chassis) call(args []string, at time.Duration) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	text := strings.Join(args, " ")
	c.log = append(c.log, fmt.Sprintf("[%7.2fs] %s", at.Seconds(), text))
	if len(args) == 0 {
		return ""
	}
	var out strings.Builder
	switch args[0] {
	case "get":
		for _, p := range args[1:] {
			switch p {
			case "power":
				v := 0
				if c.on {
					v = 1
				}
				fmt.Fprintf(&out, "power:%d\n", v)
			case "boot":
				fmt.Fprintf(&out, "boot:%s\n", c.boot)
			}
		}
	case "set":
		c.setLog = append(c.setLog, text)
		for i := 1; i+1 < len(args); i += 2 {
			switch p, v := args[i], args[i+1]; p {
			case "power":
				if on := v == "1"; on != c.on {
					c.on = on
					c.acts <- chassisAct{on: on, off: !on}
				}
			case "boot":
				c.boot = v
			}
		}
	}
	return out.String()
}

// work starts and stops QEMU as the power asks, and starts it again when
// it ended on its own with the power on (the guest rebooted).
func (c *chassis) work() {
	defer close(c.ended)
	var cur *vm
	for {
		var a chassisAct
		select {
		case <-c.quit:
			if cur != nil {
				cur.stop()
			}
			return
		case a = <-c.acts:
		}
		switch {
		case a.off:
			if cur != nil {
				cur.stop()
				cur = nil
			}
		case a.on:
			if cur == nil {
				cur = c.powerUp()
			}
		case a.exited != nil && a.exited == cur:
			cur = nil
			c.mu.Lock()
			on := c.on
			c.mu.Unlock()
			if !on {
				continue
			}
			if ran := a.exited.ended.Sub(a.exited.start); ran < 10*time.Second {
				c.t.Errorf("QEMU %s ended after %s (%s); not starting it again", a.exited.name, ran.Round(time.Second), a.exited.status())
				continue
			}
			cur = c.powerUp()
		}
	}
}

// powerUp starts QEMU: the NIC first in the boot order when the boot flag
// is pxe (and the flag is used up), else the disk.
func (c *chassis) powerUp() *vm {
	c.mu.Lock()
	pxe := c.boot == "pxe"
	c.boot = "default"
	n := len(c.runs)
	c.mu.Unlock()
	nic, disk, kind := "2", "1", "disk"
	if pxe {
		nic, disk, kind = "1", "2", "pxe"
	}
	args := make([]string, len(c.args))
	for i, a := range c.args {
		args[i] = strings.NewReplacer("%NIC%", nic, "%DISK%", disk).Replace(a)
	}
	v := startVM(c.t, fmt.Sprintf("start%d-%s-first", n+1, kind), c.ns, c.vars, 1024, 20*time.Minute, args...)
	go func() {
		<-v.done
		select {
		case c.acts <- chassisAct{exited: v}:
		case <-c.quit:
		}
	}()
	c.mu.Lock()
	c.runs = append(c.runs, chassisRun{v, pxe})
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	return v
}

// waitRun waits up to timeout for QEMU start i (from 0) and returns
// whether it had the NIC first, and the run.
func (c *chassis) waitRun(t *testing.T, i int, timeout time.Duration) (bool, *vm) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		c.mu.Lock()
		if i < len(c.runs) {
			r := c.runs[i]
			c.mu.Unlock()
			return r.pxeFirst, r.v
		}
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("QEMU start %d did not happen within %s; the BMC's chassis calls:\n%s", i+1, timeout, strings.Join(c.calls(), "\n"))
		}
	}
}

// sets are the chassis_control set calls so far.
func (c *chassis) sets() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.setLog...)
}

// calls are all chassis_control calls so far, timed.
func (c *chassis) calls() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.log...)
}

// startBMC runs ipmi_sim in namespace ns on ipmiAddr with one admin
// user (ipmiUser, password) and this test binary as its chassis_control
// program, talking to the machine at sock.
func startBMC(t *testing.T, ns, dir, sock, password string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	if err := os.MkdirAll(state, 0o755); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(ipmiAddr)
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("lan.conf", fmt.Sprintf(`name "bty-e2e"
set_working_mc 0x20
  startlan 1
    addr %s %s
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "%s"
  user 2 true "%s" "%s" admin 10 none md2 md5 straight
`, host, port, exe, ipmiUser, password))
	write("emu.cmds", "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n")
	out := newTimedLog(time.Now())
	cmd := exec.Command("ip", "netns", "exec", ns, "ipmi_sim", "-c", filepath.Join(dir, "lan.conf"),
		"-f", filepath.Join(dir, "emu.cmds"), "-s", state, "-n", "-p")
	cmd.Env = append(os.Environ(), chassisEnv+"="+sock)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // cleanup ends its chassis_control runs too
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		if t.Failed() {
			t.Logf("ipmi_sim's output:\n%s", tail(out.Timed(), 4000))
		}
	})
}
