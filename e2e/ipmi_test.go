package e2e

// The machine behind an IPMI BMC for the QEMU lab's fleet test
// (fleet_test.go): OpenIPMI's ipmi_sim as the BMC, and this test
// binary as its chassis_control program (TestMain's chassis mode),
// passing power and boot-flag commands to the test: "set power 1"
// starts QEMU with the disk first in the boot order, or the NIC first
// once when the boot flag is pxe (the flag is then consumed, like
// firmware's one-time boot override); "set power 0" ends it; QEMU
// ending on its own (-no-reboot: the guest rebooted) starts it again
// with the power still on.

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
)

var (
	toolIPMISim = tool{"ipmi_sim", "openipmi"}
	toolSSH     = tool{"ssh", "openssh-client"}
)

// seedAndReady are a cloud-init flash's calls in bty-web's log after
// its PXE boot: the live env fetches the seed and reports done, the
// flashed OS phones home.
func seedAndReady(mac string) []chainStep {
	return []chainStep{
		{"the live env fetches the user-data", `msg="seed served" mac=` + mac + ` what=user-data`},
		{"the live env fetches the meta-data", `msg="seed served" mac=` + mac + ` what=meta-data`},
		{"the live env reports done", `method=POST path=/pxe/\S+/done status=200`},
		{"the flashed OS phones home", `msg="machine ready \(phone-home\)" mac=` + mac},
	}
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
func checkNoDetour(t *testing.T, w *btyWeb, mac string, v *vm, mark int) {
	t.Helper()
	if f := v.serial.all(regexp.MustCompile(`>>Start (PXE|HTTP)|BdsDxe: starting .*(PXE|HTTP)`)); len(f) > 0 {
		t.Errorf("QEMU %s: the disk boot tried the network first: %q", v.name, f[0].text)
	}
	decline := regexp.MustCompile(`msg="proxy-DHCP left a PXE client without a boot file.*mac=` + regexp.QuoteMeta(mac))
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

// runsSoFar are the QEMU runs so far.
func (c *chassis) runsSoFar() []chassisRun {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]chassisRun(nil), c.runs...)
}

// calls are all chassis_control calls so far, timed.
func (c *chassis) calls() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.log...)
}

// startBMC runs ipmi_sim in namespace ns on addr with one admin
// user (ipmiUser, password) and this test binary as its chassis_control
// program, talking to the machine at sock.
func startBMC(t *testing.T, ns, dir, addr, sock, password string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	if err := os.MkdirAll(state, 0o755); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(addr)
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
