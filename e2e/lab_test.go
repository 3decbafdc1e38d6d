package e2e

// Shared harness of the lab tests (pxe_test.go, usb_test.go,
// server_test.go): the gate, the programs under test, a lab network in
// namespaces this process creates (a bridge with the network's own DHCP
// server, taps for QEMU, optionally a server namespace on a veth), the
// real bty-web and bty-ctl inside it, QEMU runs whose serial console is
// recorded line by line with arrival times, and the phase report.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/buildtest"
	"github.com/btyproject/bty/internal/imagetest"
)

const (
	ovmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"

	// The lab network (RFC 5737 TEST-NET-1, only ever inside namespaces
	// this process creates): the bridge (and the network's DHCP server)
	// at .254, bty-web's veth at .1, leases from .100.
	labBridgeIP = "192.0.2.254"
	labServerIP = "192.0.2.1"
	labPrefix   = "/24"
)

// Tools the lab tests run, with the Debian package that has each.
var (
	toolQEMU    = tool{"qemu-system-x86_64", "qemu-system-x86"}
	toolOVMF    = tool{ovmfCode, "ovmf"}
	toolIP      = tool{"ip", "iproute2"}
	toolDnsmasq = tool{"dnsmasq", "dnsmasq-base"}
	toolIPXE    = tool{"/usr/lib/ipxe/ipxe.efi", "ipxe"}
	toolZstd    = tool{"zstd", "zstd"}
	toolLosetup = tool{"losetup", "mount"}
)

type tool struct{ name, pkg string }

// needVMTest skips unless BTY_VMTEST=1 and root, then fails (naming the
// Debian package) when a tool is missing: asked to run, the test must not
// quietly pass over a missing dependency.
func needVMTest(t *testing.T, what string, tools ...tool) {
	t.Helper()
	if os.Getenv("BTY_VMTEST") != "1" {
		t.Skipf("VM test: %s; set BTY_VMTEST=1 as root", what)
	}
	if os.Geteuid() != 0 {
		t.Skip("VM test needs root (network namespaces, taps, loop devices, port 67/69)")
	}
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skipf("VM test runs x86-64 guests on a linux/amd64 host, not %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	for _, tl := range tools {
		if strings.HasPrefix(tl.name, "/") {
			if _, err := os.Stat(tl.name); err != nil {
				t.Fatalf("BTY_VMTEST=1 but %s is missing: apt-get install %s", tl.name, tl.pkg)
			}
		} else if _, err := exec.LookPath(tl.name); err != nil {
			t.Fatalf("BTY_VMTEST=1 but %s is missing: apt-get install %s", tl.name, tl.pkg)
		}
	}
}

// accel is QEMU's accelerator: VM_ACCEL (e.g. kvm on real hosts), else
// TCG (this kind of machine's /dev/kvm cannot run ordinary guests) with
// one host thread for both vCPUs. Multi-threaded TCG livelocked a
// flashed Debian's boot here: both vCPUs stuck for minutes on the same
// static-branch jump in sk_filter_trim_cap while systemd and modprobe
// ran (soft lockups, RCU stalls), the kind of cross-modified kernel
// text MTTCG gets wrong. Single-threaded TCG booted the same image as
// fast (60-63 s each way, timed with scripts/vm-boot.sh).
func accel() string {
	if a := os.Getenv("VM_ACCEL"); a != "" {
		return a
	}
	return "tcg,thread=single"
}

// cpuModel is QEMU's CPU model: VM_CPU, else max, every feature TCG
// emulates: the live env's sha256, XXH3 and zstd then take the SHA-NI
// and AVX2 paths they take on hardware (the PXE cycle's flash phase:
// 57 s instead of 134 s with TCG's default qemu64, see the README).
func cpuModel() string {
	if c := os.Getenv("VM_CPU"); c != "" {
		return c
	}
	return "max"
}

var (
	binMu    sync.Mutex
	binCache = map[string]string{}
	binDir   string
)

// program returns the path of bty program name: bin/NAME as `make build`
// leaves it, else one built now with `go build -o` (once per process).
func program(t *testing.T, repo, name string) string {
	t.Helper()
	binMu.Lock()
	defer binMu.Unlock()
	if p, ok := binCache[name]; ok {
		return p
	}
	p := filepath.Join(repo, "bin", name)
	if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
		t.Logf("using %s (built %s; run make build to refresh it)", p, st.ModTime().Format(time.RFC3339))
	} else {
		if binDir == "" {
			d, err := os.MkdirTemp("", "bty-e2e-bin-")
			if err != nil {
				t.Fatal(err)
			}
			binDir = d // removed by TestMain
		}
		p = filepath.Join(binDir, name)
		if err := buildtest.Build(p, "./cmd/"+name, buildtest.Options{Dir: repo, Flags: []string{"-trimpath"}}); err != nil {
			t.Fatal(err)
		}
		t.Logf("bin/%s missing: built %s", name, p)
	}
	binCache[name] = p
	return p
}

// chassisEnv names the Unix socket of TestFleetIPMI's simulated
// machine: set, this binary is not a test run but ipmi_sim's
// chassis_control program (ipmi_test.go), and ipmi_sim's children
// inherit it.
const chassisEnv = "BTY_E2E_CHASSIS"

// TestMain acts as the chassis_control program when chassisEnv is set;
// else it runs the tests and removes the binaries program built.
func TestMain(m *testing.M) {
	if sock := os.Getenv(chassisEnv); sock != "" {
		os.Exit(chassisControl(sock, os.Args[1:]))
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// chassisControl is ipmi_sim's chassis_control program ("get power",
// "set power 1", "set boot pxe", ...): it sends its arguments as one
// line to the test's machine at sock and prints the answer ("power:1")
// for ipmi_sim.
func chassisControl(sock string, args []string) int {
	c, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		fmt.Fprintf(os.Stderr, "chassis_control: %v\n", err)
		return 1
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintln(c, strings.Join(args, " ")); err != nil {
		fmt.Fprintf(os.Stderr, "chassis_control: %v\n", err)
		return 1
	}
	if _, err := io.Copy(os.Stdout, c); err != nil {
		fmt.Fprintf(os.Stderr, "chassis_control: %v\n", err)
		return 1
	}
	return 0
}

// notBuiltYet reports whether out is the placeholder bty-media's main
// printed before the media builder existed.
func notBuiltYet(out string) bool {
	return strings.Contains(out, "not yet built in this version of bty")
}

// runBtyMedia runs bty-media with args (its output streamed to the test
// log when it fails) and returns how long it took. The placeholder main
// skips the test: there is nothing to test yet.
func runBtyMedia(t *testing.T, repo string, args ...string) time.Duration {
	t.Helper()
	bin := program(t, repo, "bty-media")
	// The static programs the live env carries, from where they are.
	binDir := filepath.Dir(program(t, repo, "bty"))
	for _, p := range []string{"bty-tui", "bty-web"} {
		if d := filepath.Dir(program(t, repo, p)); d != binDir {
			t.Fatalf("bty is in %s but %s in %s: run make build", binDir, p, d)
		}
	}
	args = append(args, "--bin-dir", binDir)
	ctx, cancel := budget(t, 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = repo
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	if err != nil && notBuiltYet(out.String()) {
		t.Skipf("%s is the placeholder (%q): bty-media is not built yet", bin, strings.TrimSpace(out.String()))
	}
	if err != nil {
		t.Fatalf("bty-media %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	t.Logf("bty-media %s: %s\n%s", strings.Join(args, " "), took.Round(time.Second), tail(out.String(), 3000))
	return took
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func shortID(t *testing.T) string {
	t.Helper()
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// ---------------------------------------------------------------------
// The lab network.

// lab is a network namespace holding a bridge (br0, 192.0.2.254/24) with
// the network's own DHCP server on it (dnsmasq: addresses only, no PXE),
// and optionally a server namespace joined to the bridge by a veth
// (192.0.2.1/24 on serverIf). QEMU guests join the bridge through taps.
type lab struct {
	ns       string // the lab namespace
	srv      string // the server namespace, "" without one
	serverIf string // the server's veth, in srv
	dir      string
	dhcpLog  *timedLog
	taps     int
}

// newLab builds the lab; hosts are dnsmasq --dhcp-host values
// ("MAC,IP") pinning a guest's address. Everything is undone when the
// test ends, failed or not.
func newLab(t *testing.T, withServer bool, hosts ...string) *lab {
	t.Helper()
	id := shortID(t)
	l := &lab{ns: "bty-e2e-lab-" + id, dir: t.TempDir()}
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", l.ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", l.ns).Run() })
	ip("-n", l.ns, "link", "set", "lo", "up")
	ip("-n", l.ns, "link", "add", "br0", "type", "bridge")
	// A fresh bridge waits out STP's forwarding delay before passing
	// frames; a lab switch does not.
	ip("-n", l.ns, "link", "set", "br0", "type", "bridge", "forward_delay", "0", "stp_state", "0")
	ip("-n", l.ns, "addr", "add", labBridgeIP+labPrefix, "dev", "br0")
	ip("-n", l.ns, "link", "set", "br0", "up")
	if withServer {
		l.srv = "bty-e2e-srv-" + id
		l.serverIf = "bty-srv0"
		ip("netns", "add", l.srv)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", l.srv).Run() })
		ip("-n", l.srv, "link", "set", "lo", "up")
		ip("link", "add", l.serverIf, "netns", l.srv, "type", "veth", "peer", "name", "bty-lab0", "netns", l.ns)
		ip("-n", l.srv, "addr", "add", labServerIP+labPrefix, "dev", l.serverIf)
		ip("-n", l.srv, "link", "set", l.serverIf, "up")
		ip("-n", l.ns, "link", "set", "bty-lab0", "master", "br0")
		ip("-n", l.ns, "link", "set", "bty-lab0", "up")
		waitCarrier(t, l.srv, l.serverIf)
	}
	args := []string{"netns", "exec", l.ns, "dnsmasq", "-d", "--conf-file=/dev/null", "--port=0",
		"--interface=br0", "--bind-interfaces", "--log-dhcp",
		"--dhcp-range=192.0.2.100,192.0.2.150,255.255.255.0,1h",
		// Addresses only: no PXE, no UEFI HTTP boot URI, no IPv6. A
		// guest's firmware keeps its defaults (IPv4 and IPv6 PXE, HTTP
		// boot), so a disk boot goes through them all, as on a plain
		// network.
		"--dhcp-leasefile=" + filepath.Join(l.dir, "leases"), "--pid-file=" + filepath.Join(l.dir, "dnsmasq.pid")}
	for _, h := range hosts {
		args = append(args, "--dhcp-host="+h)
	}
	dhcp := exec.Command("ip", args...)
	l.dhcpLog = newTimedLog(time.Now())
	dhcp.Stdout, dhcp.Stderr = l.dhcpLog, l.dhcpLog
	if err := dhcp.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dhcp.Process.Kill()
		dhcp.Wait()
		if t.Failed() {
			t.Logf("the lab's DHCP server (dnsmasq):\n%s", tail(l.dhcpLog.String(), 4000))
		}
	})
	return l
}

// waitCarrier waits for dev in ns to have its carrier (else the first
// broadcast may be lost).
func waitCarrier(t *testing.T, ns, dev string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		out, _ := exec.Command("ip", "-n", ns, "-o", "link", "show", dev).Output()
		if strings.Contains(string(out), "LOWER_UP") && !strings.Contains(string(out), "NO-CARRIER") {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%s in %s has no carrier after 5 s; going on", dev, ns)
}

// addTap adds a tap on the bridge for a QEMU guest and returns its name.
func (l *lab) addTap(t *testing.T) string {
	t.Helper()
	l.taps++
	name := fmt.Sprintf("tap%d", l.taps)
	for _, args := range [][]string{
		{"-n", l.ns, "tuntap", "add", "dev", name, "mode", "tap"},
		{"-n", l.ns, "link", "set", name, "master", "br0"},
		{"-n", l.ns, "link", "set", name, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return name
}

// dialIn returns a DialContext that opens its connections inside network
// namespace ns: each dial runs on an OS thread moved into ns and thrown
// away afterwards (it stays locked), so no other goroutine ever runs in
// ns; the socket keeps its namespace.
func dialIn(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
			f, err := os.Open(filepath.Join("/run/netns", ns))
			if err != nil {
				ch <- result{nil, err}
				return
			}
			err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
			f.Close()
			if err != nil {
				ch <- result{nil, fmt.Errorf("setns %s: %w", ns, err)}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

// httpIn is an HTTP client whose connections start in namespace ns.
func httpIn(ns string) *http.Client {
	return &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{DialContext: dialIn(ns), DisableKeepAlives: true},
	}
}

// get GETs url from inside ns and returns the status and body.
func get(t *testing.T, ns, url string, header ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := httpIn(ns).Do(req)
	if err != nil {
		t.Fatalf("GET %s (from namespace %s): %v", url, ns, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// ---------------------------------------------------------------------
// bty-web and bty-ctl in the server namespace.

type btyWeb struct {
	url      string
	ns       string
	password string
	log      *timedLog
	ctl      string // bty-ctl
	ctlHome  string // its XDG_CONFIG_HOME
}

// startBtyWeb runs the real bty-web in l's server namespace on port 8080
// with TFTP on 69 and proxy-DHCP on the server's veth; state, images and
// boot dirs under dir, and env's variables besides. It returns once
// /healthz answers.
func startBtyWeb(t *testing.T, repo string, l *lab, dir, bootDir, imageRoot string, env ...string) *btyWeb {
	t.Helper()
	w := &btyWeb{url: "http://" + labServerIP + ":8080", ns: l.srv, password: "e2e-" + shortID(t) + shortID(t),
		log: newTimedLog(time.Now()), ctl: program(t, repo, "bty-ctl"), ctlHome: filepath.Join(dir, "ctl")}
	cmd := exec.Command("ip", "netns", "exec", l.srv, program(t, repo, "bty-web"))
	cmd.Env = append(os.Environ(),
		"BTY_STATE_DIR="+filepath.Join(dir, "state"),
		"BTY_IMAGE_ROOT="+imageRoot,
		"BTY_BOOT_DIR="+bootDir,
		"BTY_ADMIN_PASSWORD="+w.password,
		"BTY_PROXYDHCP_IFACE="+l.serverIf,
		"BTY_WEB_HOST=0.0.0.0",
		"BTY_WEB_PORT=8080",
		"BTY_TFTP_PORT=69",
		"BTY_LOG_LEVEL=debug",
		// cijoe-online runs the stand-in, which runs each step over
		// real SSH (TestFleetIPMI).
		"BTY_CIJOE="+filepath.Join(repo, "e2e", "testdata", "cijoe"),
	)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = w.log, w.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("bty-web's log:\n%s", tail(w.log.Timed(), 12000))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("bty-web exited at start: %v\n%s", cmd.ProcessState, w.log.String())
		default:
		}
		req, _ := http.NewRequest("GET", w.url+"/healthz", nil)
		if resp, err := httpIn(l.srv).Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("bty-web did not answer /healthz within 30 s:\n%s", w.log.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(w.log.String(), "proxy-DHCP answering PXE clients") {
		t.Fatalf("bty-web did not start proxy-DHCP on %s:\n%s", l.serverIf, w.log.String())
	}
	return w
}

// ctlRun runs the real bty-ctl against w from inside the server
// namespace and returns its stdout, failing the test on a non-zero exit.
func (w *btyWeb) ctlRun(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, err := w.ctlTry(stdin, args...)
	if err != nil {
		t.Fatalf("bty-ctl %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func (w *btyWeb) ctlTry(stdin string, args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", w.ns, w.ctl, "--server", w.url}, args...)...)
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+w.ctlHome, "BTY_SERVER=", "BTY_TOKEN=")
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// ctlExit runs bty-ctl like ctlTry and returns its exit code (-1: it
// did not run), stdout and stderr.
func (w *btyWeb) ctlExit(stdin string, args ...string) (int, string, string) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", w.ns, w.ctl, "--server", w.url}, args...)...)
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+w.ctlHome, "BTY_SERVER=", "BTY_TOKEN=")
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.String(), stderr.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), stdout.String(), stderr.String()
	default:
		return -1, stdout.String(), stderr.String() + err.Error()
	}
}

// getStatus is the HTTP status of an unauthenticated GET of path on w,
// from inside the server namespace (curl).
func (w *btyWeb) getStatus(t *testing.T, path string) int {
	t.Helper()
	return w.callStatus(t, "GET", path)
}

// callStatus sends method path from inside the lab (from the server's
// own address, not a guest's) with the headers hdr ("Name: value"),
// and returns the status code.
func (w *btyWeb) callStatus(t *testing.T, method, path string, hdr ...string) int {
	t.Helper()
	args := []string{"netns", "exec", w.ns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method}
	for _, h := range hdr {
		args = append(args, "-H", h)
	}
	out, err := exec.Command("ip", append(args, w.url+path)...).Output()
	if err != nil {
		t.Fatalf("curl %s: %v", path, err)
	}
	code, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("curl %s: status %q", path, out)
	}
	return code
}

// machineGet is `bty-ctl machines get MAC --json`.
func (w *btyWeb) machineGet(t *testing.T, mac string) api.Machine {
	t.Helper()
	out := w.ctlRun(t, "", "machines", "get", mac, "--json")
	var doc struct {
		Machine api.Machine `json:"machine"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("bty-ctl machines get --json: %v\n%s", err, out)
	}
	return doc.Machine
}

// stranger is someone on the provisioning network (the lab's server
// address, not the guest's) who sends the machine's MAC (mac) while it
// is in its flash cycle, with the cycle's token sniffed from the console: its
// PXE contact gets the local disk and no token, the seed and the
// reports are refused (403), and the machine's record keeps its cycle,
// its address and its next boot, with the conflict noted.
func stranger(t *testing.T, w *btyWeb, mac, cycle, when string) {
	t.Helper()
	before := w.machineGet(t, mac)
	if before.Cycle == nil || before.Cycle.IP == labServerIP {
		t.Fatalf("%s: the machine has no flash cycle bound to its own address: %+v", when, before.Cycle)
	}
	code, script := get(t, w.ns, w.url+"/pxe/"+mac)
	if code != 200 || !strings.Contains(script, "booting from the local disk") || strings.Contains(script, "bty.cycle") ||
		strings.Contains(script, "bty.image_url") {
		t.Errorf("%s: the stranger's PXE contact got %d:\n%s\nwant the local disk, no cycle", when, code, script)
	}
	for _, c := range []struct{ method, path, hdr string }{
		{"GET", "/user-data", ""}, {"GET", "/user-data", "X-Bty-Cycle: " + cycle}, {"GET", "/meta-data", "X-Bty-Cycle: " + cycle},
		{"POST", "/done", "X-Bty-Cycle: " + cycle}, {"POST", "/failed", "X-Bty-Cycle: " + cycle},
	} {
		var hdr []string
		if c.hdr != "" {
			hdr = append(hdr, c.hdr)
		}
		if code := w.callStatus(t, c.method, "/pxe/"+mac+c.path, hdr...); code != 403 {
			t.Errorf("%s: the stranger's %s %s (%q): %d, want 403", when, c.method, c.path, c.hdr, code)
		}
	}
	after := w.machineGet(t, mac)
	if after.LastConflictIP != labServerIP || after.LastConflictAt == nil {
		t.Errorf("%s: conflict not recorded: %q %v", when, after.LastConflictIP, after.LastConflictAt)
	}
	// (The machine's own live env may fetch its seed meanwhile: the
	// cycle's *_served flags are not compared.)
	if after.Cycle == nil || after.Cycle.IP != before.Cycle.IP || !after.Cycle.StartedAt.Equal(before.Cycle.StartedAt) || after.NextBoot != before.NextBoot || after.LastSeenIP != before.LastSeenIP ||
		after.LastFailure != before.LastFailure || !reflect.DeepEqual(after.LastFlashedAt, before.LastFlashedAt) {
		t.Errorf("%s: the stranger changed the record:\nbefore %+v\nafter  %+v", when, before, after)
	}
	t.Logf("%s: a stranger at %s sending %s got the local disk and 403s; the cycle stays bound to %s", when, labServerIP, mac, after.Cycle.IP)
}

// ---------------------------------------------------------------------
// Timed logs: serial consoles and server logs, line by line, with the
// time each line arrived.

type timedLine struct {
	at   time.Duration // since the log's start
	text string        // without \r, \n and terminal escapes
}

// timedLog is an io.Writer recording complete lines with their arrival
// time (relative to start) and the raw bytes; waiters are woken on every
// write.
type timedLog struct {
	mu      sync.Mutex
	start   time.Time
	raw     bytes.Buffer
	lines   []timedLine
	partial []byte
	changed chan struct{}
}

func newTimedLog(start time.Time) *timedLog {
	return &timedLog{start: start, changed: make(chan struct{})}
}

// ansiRE matches terminal escape sequences (CSI, OSC, charset and
// two-byte escapes) that firmware, the kernel and the TUI write.
var ansiRE = regexp.MustCompile(`\x1b(?:\[[0-9;?<=>]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[()][0-9A-Za-z]|[@-Z\\-_])`)

func clean(s string) string {
	s = ansiRE.ReplaceAllString(s, "")
	return strings.ReplaceAll(s, "\r", "")
}

func (l *timedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	at := time.Since(l.start)
	l.raw.Write(p)
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, timedLine{at, clean(string(l.partial[:i]))})
		l.partial = l.partial[i+1:]
	}
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

// String is everything written, raw.
func (l *timedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.raw.String()
}

// Text is everything written without escapes and carriage returns.
func (l *timedLog) Text() string { return clean(l.String()) }

// Timed is the complete lines, each prefixed with its arrival time.
func (l *timedLog) Timed() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, ln := range l.lines {
		fmt.Fprintf(&b, "[%7.2fs] %s\n", ln.at.Seconds(), ln.text)
	}
	if len(l.partial) > 0 {
		fmt.Fprintf(&b, "[  ...   ] %s\n", clean(string(l.partial)))
	}
	return b.String()
}

// mark is the number of complete lines so far: find from it sees only
// what comes later.
func (l *timedLog) mark() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.lines)
}

// find returns the first complete line from index from on matching re.
func (l *timedLog) find(re *regexp.Regexp, from int) (timedLine, int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := from; i < len(l.lines); i++ {
		if re.MatchString(l.lines[i].text) {
			return l.lines[i], i, true
		}
	}
	return timedLine{}, len(l.lines), false
}

// all returns every complete line matching re.
func (l *timedLog) all(re *regexp.Regexp) []timedLine {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []timedLine
	for _, ln := range l.lines {
		if re.MatchString(ln.text) {
			out = append(out, ln)
		}
	}
	return out
}

func (l *timedLog) wait() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed
}

// ---------------------------------------------------------------------
// QEMU.

// vm is one QEMU run.
type vm struct {
	name   string
	serial *timedLog
	stderr *timedLog
	stdin  io.WriteCloser
	cmd    *exec.Cmd
	start  time.Time
	done   chan struct{}
	err    error     // QEMU's exit, once done is closed
	ended  time.Time // when it exited, once done is closed
	limit  time.Duration
	// cursor: serial lines before it were already matched by expect.
	cursor int
}

// startVM runs qemu-system-x86_64 (in namespace ns unless "") with the
// common machine (q35, OVMF with its own copy of the variables in vars,
// no display, the serial console on stdio, -no-reboot) and args. The run
// is killed after limit (cut short to end two minutes before the test's
// deadline) and when the test ends; on failure the serial log is kept.
func startVM(t *testing.T, name, ns, vars string, mem int, limit time.Duration, args ...string) *vm {
	t.Helper()
	if d, ok := t.Deadline(); ok && time.Until(d)-2*time.Minute < limit {
		limit = time.Until(d) - 2*time.Minute
		if limit <= 0 {
			t.Fatalf("no time left for QEMU run %s before the test deadline", name)
		}
	}
	qargs := []string{"-machine", "q35", "-accel", accel(), "-cpu", cpuModel(), "-m", fmt.Sprint(mem), "-smp", "2",
		"-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot",
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + ovmfCode,
		"-drive", "if=pflash,format=raw,unit=1,file=" + vars}
	qargs = append(qargs, args...)
	var cmd *exec.Cmd
	if ns != "" {
		cmd = exec.Command("ip", append([]string{"netns", "exec", ns, "qemu-system-x86_64"}, qargs...)...)
	} else {
		cmd = exec.Command("qemu-system-x86_64", qargs...)
	}
	v := &vm{name: name, cmd: cmd, done: make(chan struct{}), limit: limit}
	v.start = time.Now()
	v.serial, v.stderr = newTimedLog(v.start), newTimedLog(v.start)
	cmd.Stdout, cmd.Stderr = v.serial, v.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	v.stdin = stdin
	t.Logf("QEMU %s: %s", name, strings.Join(cmd.Args, " "))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		v.err = cmd.Wait()
		v.ended = time.Now()
		close(v.done)
	}()
	timer := time.AfterFunc(limit, func() { cmd.Process.Kill() })
	t.Cleanup(func() {
		timer.Stop()
		v.stop()
		if t.Failed() || os.Getenv("BTY_VMTEST_SERIAL_DIR") != "" {
			v.keepLog(t)
		}
	})
	return v
}

// stop ends QEMU if it still runs: SIGTERM (QEMU flushes its disks),
// then SIGKILL.
func (v *vm) stop() {
	select {
	case <-v.done:
		return
	default:
	}
	v.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-v.done:
	case <-time.After(10 * time.Second):
		v.cmd.Process.Kill()
		<-v.done
	}
}

func (v *vm) exited() bool {
	select {
	case <-v.done:
		return true
	default:
		return false
	}
}

// keepLog writes the serial log (timed and raw) to $BTY_VMTEST_SERIAL_DIR
// (always, when set) or, when the test failed, a new temporary directory
// that outlives the test, and logs where and the log's tail.
func (v *vm) keepLog(t *testing.T) {
	dir, err := serialDir(t)
	if err != nil {
		t.Logf("keeping the serial log: %v", err)
		return
	}
	base := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+"-"+v.name)
	os.WriteFile(base+".serial.log", []byte(v.serial.Timed()), 0o644)
	os.WriteFile(base+".serial.raw", []byte(v.serial.String()), 0o644)
	os.WriteFile(base+".qemu-stderr.log", []byte(v.stderr.String()), 0o644)
	if !t.Failed() {
		t.Logf("QEMU %s (%s): serial log kept in %s.serial.log", v.name, v.status(), base)
		return
	}
	t.Logf("QEMU %s (%s): serial log kept in %s.serial.log (raw: .serial.raw); QEMU's stderr: %q; tail:\n%s",
		v.name, v.status(), base, v.stderr.String(), tail(v.serial.Timed(), 5000))
}

var (
	serialDirsMu sync.Mutex
	serialDirs   = map[string]string{}
)

// serialDir is where a test's serial logs are kept:
// $BTY_VMTEST_SERIAL_DIR, else one new temporary directory per test.
func serialDir(t *testing.T) (string, error) {
	if dir := os.Getenv("BTY_VMTEST_SERIAL_DIR"); dir != "" {
		return dir, os.MkdirAll(dir, 0o755)
	}
	serialDirsMu.Lock()
	defer serialDirsMu.Unlock()
	if d, ok := serialDirs[t.Name()]; ok {
		return d, nil
	}
	d, err := os.MkdirTemp("", "bty-e2e-serial-")
	if err != nil {
		return "", err
	}
	serialDirs[t.Name()] = d
	return d, nil
}

func (v *vm) status() string {
	select {
	case <-v.done:
		return fmt.Sprintf("exited after %s: %v", v.ended.Sub(v.start).Round(time.Second), v.err)
	default:
		return fmt.Sprintf("running for %s", time.Since(v.start).Round(time.Second))
	}
}

// errVMExited and errTimeout say why a wait ended without a match.
var (
	errVMExited = errors.New("QEMU exited")
	errTimeout  = errors.New("timed out")
)

// waitLine waits up to timeout for a complete serial line at or after
// index from that matches re.
func (v *vm) waitLine(re *regexp.Regexp, from int, timeout time.Duration) (timedLine, int, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		ch := v.serial.wait()
		if ln, i, ok := v.serial.find(re, from); ok {
			return ln, i, nil
		}
		select {
		case <-ch:
		case <-v.done:
			// Everything QEMU wrote is in: one last look.
			if ln, i, ok := v.serial.find(re, from); ok {
				return ln, i, nil
			}
			return timedLine{}, 0, fmt.Errorf("%w (%v) after %s", errVMExited, v.err, time.Since(v.start).Round(time.Second))
		case <-deadline.C:
			return timedLine{}, 0, fmt.Errorf("%w after %s", errTimeout, timeout)
		}
	}
}

// expect waits for the next serial line (after the last one expect
// matched) matching pattern and fails the test if none comes.
func (v *vm) expect(t *testing.T, pattern string, timeout time.Duration) timedLine {
	t.Helper()
	re := regexp.MustCompile(pattern)
	ln, i, err := v.waitLine(re, v.cursor, timeout)
	if err != nil {
		t.Fatalf("QEMU %s: no serial line /%s/: %v; serial tail:\n%s", v.name, pattern, err, tail(v.serial.Timed(), 4000))
	}
	v.cursor = i + 1
	t.Logf("QEMU %s [%6.1fs] %s", v.name, ln.at.Seconds(), ln.text)
	return ln
}

// waitExit waits up to timeout for QEMU to end.
func (v *vm) waitExit(timeout time.Duration) error {
	select {
	case <-v.done:
		return nil
	case <-time.After(timeout):
		return errTimeout
	}
}

// send writes keys to the guest's serial console.
func (v *vm) send(t *testing.T, keys string) {
	t.Helper()
	if _, err := io.WriteString(v.stdin, keys); err != nil {
		t.Fatalf("QEMU %s: writing %q to the serial console: %v", v.name, keys, err)
	}
}

// copyVars gives a guest its own copy of OVMF's variable store.
func copyVars(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(ovmfVars)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "OVMF_VARS.fd")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// sparseFile creates a sparse file of size bytes.
func sparseFile(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// ---------------------------------------------------------------------
// Images.

// debianImage returns the cached Debian test image (scripts/vm-image.sh
// builds it when missing) and its sha256, computed here.
func debianImage(t *testing.T, repo string) (string, string, int64) {
	t.Helper()
	ctx, cancel := budget(t, imageTimeout)
	defer cancel()
	out := run(t, command(ctx, filepath.Join(repo, "scripts/vm-image.sh")))
	lines := strings.Split(strings.TrimSpace(out), "\n")
	img := lines[len(lines)-1]
	st, err := os.Stat(img)
	if err != nil {
		t.Fatalf("vm-image.sh printed %q: %v", img, err)
	}
	return img, imagetest.SHA256(t, img, 0, st.Size()), st.Size()
}

// zstdOf returns img compressed with `zstd -T0 -3`, cached next to it
// under a name keyed by its sha256 (older ones are removed).
func zstdOf(t *testing.T, img, sum string) string {
	t.Helper()
	p := img + "." + sum[:16] + ".zst"
	if st, err := os.Stat(p); err == nil && st.Size() > 0 {
		return p
	}
	old, _ := filepath.Glob(img + ".*.zst")
	for _, o := range old {
		os.Remove(o)
	}
	tmp := p + ".tmp-" + shortID(t)
	defer os.Remove(tmp)
	start := time.Now()
	if out, err := exec.Command("zstd", "-T0", "-3", "-q", "-f", img, "-o", tmp).CombinedOutput(); err != nil {
		t.Fatalf("zstd %s: %v\n%s", img, err, out)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	t.Logf("compressed %s with zstd -T0 -3 in %s", img, time.Since(start).Round(time.Second))
	return p
}

// ---------------------------------------------------------------------
// Phases.

type phase struct {
	name string
	d    time.Duration
}

// reportPhases prints the phases as one grep-able block (`PHASE name
// 52s`) on stdout and in the test log, and appends them to
// $BTY_PHASES_FILE when set.
func reportPhases(t *testing.T, phases []phase, extra ...string) {
	t.Helper()
	var b strings.Builder
	for _, p := range phases {
		fmt.Fprintf(&b, "PHASE %s %ds\n", p.name, int(p.d.Round(time.Second).Seconds()))
	}
	for _, e := range extra {
		b.WriteString(e + "\n")
	}
	fmt.Print(b.String())
	t.Logf("phases:\n%s", b.String())
	if p := os.Getenv("BTY_PHASES_FILE"); p != "" {
		f, err := os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Errorf("BTY_PHASES_FILE: %v", err)
			return
		}
		defer f.Close()
		fmt.Fprintf(f, "# %s %s\n%s", t.Name(), time.Now().UTC().Format(time.RFC3339), b.String())
	}
}

// ---------------------------------------------------------------------
// Disk images.

// gptPart is one GPT partition: its name and byte range.
type gptPart struct {
	name          string
	offset, bytes int64
}

// gptPartitions reads path's GPT (512-byte sectors), read here rather
// than with a partitioning tool so the test checks the bytes it boots.
func gptPartitions(t *testing.T, path string) []gptPart {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hdr := make([]byte, 92)
	if _, err := f.ReadAt(hdr, 512); err != nil {
		t.Fatalf("%s: reading the GPT header: %v", path, err)
	}
	if string(hdr[:8]) != "EFI PART" {
		t.Fatalf("%s: no GPT header at LBA 1 (found %q)", path, hdr[:8])
	}
	le := func(b []byte) int64 {
		var v int64
		for i := len(b) - 1; i >= 0; i-- {
			v = v<<8 | int64(b[i])
		}
		return v
	}
	entLBA, n, size := le(hdr[72:80]), le(hdr[80:84]), le(hdr[84:88])
	var out []gptPart
	ent := make([]byte, size)
	for i := int64(0); i < n; i++ {
		if _, err := f.ReadAt(ent, entLBA*512+i*size); err != nil {
			t.Fatalf("%s: reading GPT entry %d: %v", path, i, err)
		}
		if bytes.Equal(ent[:16], make([]byte, 16)) {
			continue
		}
		var name []rune
		for j := 56; j+1 < 128 && j+1 < len(ent); j += 2 {
			c := rune(ent[j]) | rune(ent[j+1])<<8
			if c == 0 {
				break
			}
			name = append(name, c)
		}
		first, last := le(ent[32:40]), le(ent[40:48])
		out = append(out, gptPart{string(name), first * 512, (last - first + 1) * 512})
	}
	return out
}

func findPart(t *testing.T, parts []gptPart, name string) gptPart {
	t.Helper()
	for _, p := range parts {
		if p.name == name {
			return p
		}
	}
	t.Fatalf("no GPT partition named %s (partitions: %+v)", name, parts)
	return gptPart{}
}

// patternImage writes a raw test image of size bytes (a multiple of
// 3 MiB): random, zeros, random thirds, so a flash must both write data
// and leave zeros right. It returns the image's sha256.
func patternImage(t *testing.T, path string, size int64) string {
	t.Helper()
	third := size / 3
	data := make([]byte, size)
	if _, err := rand.Read(data[:third]); err != nil {
		t.Fatal(err)
	}
	if _, err := rand.Read(data[2*third:]); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// exfatMount mounts the exFAT partition p of img read-write through a
// loop device and exfat-fuse (the host kernel has no exfat). It returns
// the mount point and a release func (unmount, detach; also run when the
// test ends), or a reason it cannot.
func exfatMount(t *testing.T, img string, p gptPart) (string, func(), string) {
	t.Helper()
	if _, err := exec.LookPath("mount.exfat-fuse"); err != nil {
		return "", nil, "mount.exfat-fuse is missing (apt-get install exfat-fuse)"
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return "", nil, "no /dev/fuse: " + err.Error()
	}
	out, err := exec.Command("losetup", "--find", "--show", "--offset", fmt.Sprint(p.offset),
		"--sizelimit", fmt.Sprint(p.bytes), img).CombinedOutput()
	if err != nil {
		return "", nil, fmt.Sprintf("losetup: %v: %s", err, out)
	}
	loop := strings.TrimSpace(string(out))
	dir := filepath.Join(t.TempDir(), "exfat")
	os.MkdirAll(dir, 0o755)
	var once sync.Once
	mounted := false
	release := func() {
		once.Do(func() {
			if mounted {
				if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
					t.Errorf("umount %s: %v: %s", dir, err, out)
					exec.Command("umount", "-l", dir).Run()
				}
			}
			if out, err := exec.Command("losetup", "-d", loop).CombinedOutput(); err != nil {
				t.Errorf("losetup -d %s: %v: %s", loop, err, out)
			}
		})
	}
	t.Cleanup(release)
	if out, err := exec.Command("mount.exfat-fuse", loop, dir).CombinedOutput(); err != nil {
		release()
		return "", nil, fmt.Sprintf("mount.exfat-fuse %s: %v: %s", loop, err, out)
	}
	mounted = true
	return dir, release, ""
}

// rawLen is how many bytes were written so far: TextFrom(rawLen()) sees
// only what comes later.
func (l *timedLog) rawLen() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.raw.Len()
}

// TextFrom is what was written from raw offset off on, without escapes.
func (l *timedLog) TextFrom(off int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.raw.Bytes()
	if off > len(b) {
		off = len(b)
	}
	return clean(string(b[off:]))
}

// waitTextFrom waits up to timeout for re to match the serial output
// written from raw offset off on (escapes removed).
func (v *vm) waitTextFrom(re *regexp.Regexp, off int, timeout time.Duration) (string, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		ch := v.serial.wait()
		if m := re.FindString(v.serial.TextFrom(off)); m != "" {
			return m, nil
		}
		select {
		case <-ch:
		case <-v.done:
			if m := re.FindString(v.serial.TextFrom(off)); m != "" {
				return m, nil
			}
			return "", fmt.Errorf("%w (%v) after %s", errVMExited, v.err, time.Since(v.start).Round(time.Second))
		case <-deadline.C:
			return "", fmt.Errorf("%w after %s", errTimeout, timeout)
		}
	}
}
