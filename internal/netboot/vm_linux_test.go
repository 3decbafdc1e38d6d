package netboot

// TestPXEChainOVMF (BTY_VMTEST=1, root) boots a UEFI QEMU guest with no
// disk and no option ROM on a lab network: the firmware's own PXE gets
// an address from the network's DHCP server (dnsmasq) and its boot file
// from bty's proxy-DHCP, fetches ipxe.efi from bty's TFTP, iPXE asks
// proxy-DHCP again and gets /pxe-bootstrap.ipxe, chains to /pxe/MAC and
// runs the flash script, which boots a kernel and an initramfs whose
// /init prints /proc/cmdline on the serial console.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/btyproject/bty/internal/buildtest"
	"github.com/btyproject/bty/internal/fleet"
)

const vmMAC = "52:54:00:b7:70:01"

// initSource is the guest's /init: print the kernel command line, power off.
const initSource = `package main

import (
	"os"
	"syscall"
)

func main() {
	os.Mkdir("/proc", 0o555)
	syscall.Mount("proc", "/proc", "proc", 0, "")
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		os.Stdout.WriteString("BTY-CMDLINE-ERROR: " + err.Error() + "\n")
	}
	os.Stdout.WriteString("\nBTY-CMDLINE: " + string(b) + "\n")
	syscall.Sync()
	syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
}
`

// findKernel returns a bootable x86-64 Linux kernel: BTY_NETBOOT_KERNEL,
// the host's, or the one scripts/vm-image.sh caches.
func findKernel() string {
	cands := []string{os.Getenv("BTY_NETBOOT_KERNEL"), "/vmlinuz", "/boot/vmlinuz"}
	if m, _ := filepath.Glob("/boot/vmlinuz-*"); len(m) > 0 {
		cands = append(cands, m...)
	}
	cands = append(cands, "../../.cache/vm-image/rootfs/vmlinuz", "../../.cache/bench-image/rootfs/vmlinuz")
	for _, c := range cands {
		if c == "" {
			continue
		}
		if st, err := os.Stat(c); err == nil && st.Mode().IsRegular() {
			return c
		}
	}
	return ""
}

// buildInitramfs compiles initSource statically and packs it as /init in
// a newc cpio archive.
func buildInitramfs(t *testing.T) []byte {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(initSource), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module btyinit\n\ngo 1.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := buildtest.Build(filepath.Join(dir, "init"), ".", buildtest.Options{Dir: dir, Env: []string{"GOOS=linux", "GOARCH=amd64", "GOFLAGS="}}); err != nil {
		t.Fatalf("building the guest's /init: %v", err)
	}
	bin, err := os.ReadFile(filepath.Join(dir, "init"))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	ino := 1
	entry := func(name string, mode int, data []byte) {
		fmt.Fprintf(&b, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
		ino++
		b.WriteString(name + "\x00")
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
		b.Write(data)
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
	}
	entry("proc", 0o040755, nil)
	entry("init", 0o100755, bin)
	entry("TRAILER!!!", 0, nil)
	return b.Bytes()
}

// goInNetns runs fn in the background on an OS thread in namespace ns
// (thrown away afterwards). Sockets fn opens, and sockets pin/tftp opens
// per transfer from the goroutine that calls Serve, belong to ns.
func goInNetns(t *testing.T, ns string, fn func()) {
	t.Helper()
	ready := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open(filepath.Join("/run/netns", ns))
		if err != nil {
			ready <- err
			return
		}
		err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
		f.Close()
		ready <- err
		if err == nil {
			fn()
		}
	}()
	if err := <-ready; err != nil {
		t.Fatal(err)
	}
}

func TestPXEChainOVMF(t *testing.T) {
	if os.Getenv("BTY_VMTEST") != "1" {
		t.Skip("VM test: PXE-boots a UEFI QEMU guest through bty's proxy-DHCP, TFTP and iPXE scripts (about a minute per case; second-nic boots from the second of two NICs); set BTY_VMTEST=1 as root")
	}
	ovmfCode, ovmfVars := "/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"
	for _, need := range []string{"qemu-system-x86_64", "dnsmasq", "ip", ovmfCode, ovmfVars, filepath.Join(DefaultIPXEDir, "ipxe.efi")} {
		if strings.HasPrefix(need, "/") {
			if _, err := os.Stat(need); err != nil {
				t.Fatalf("BTY_VMTEST=1 but %s is missing: apt-get install qemu-system-x86 ovmf ipxe", need)
			}
		} else if _, err := exec.LookPath(need); err != nil {
			t.Fatalf("BTY_VMTEST=1 but %s is missing: scripts/install-deps.sh vm and test install it", need)
		}
	}
	t.Run("flash", func(t *testing.T) { pxeChainOVMF(t, fleet.PolicyFlash, false) })
	t.Run("local", func(t *testing.T) { pxeChainOVMF(t, fleet.PolicyLocal, false) })
	t.Run("second-nic", func(t *testing.T) { pxeChainOVMF(t, fleet.PolicyLocal, true) })
}

// vmDeadMAC is the first NIC of the second-nic guest: on a network with
// nothing else on it, so the machine boots from its second NIC (vmMAC).
const vmDeadMAC = "52:54:00:b7:70:00"

// pxeChainOVMF boots the guest with /pxe/MAC serving policy: flash must
// reach the kernel's /init; local must run in iPXE, fetch nothing more and
// end iPXE with the bootstrap's failure status (so a UEFI boot manager
// goes on to the disk), with no other error on the way.
//
// secondNIC gives the guest two NICs, the first (vmDeadMAC, net0 to
// iPXE) on a network with nothing on it, the second (vmMAC) on the lab
// network and first in the boot order: the bootstrap must ask for the
// second NIC's script (docs/reference.md, "Inventory"), never the
// first's.
func pxeChainOVMF(t *testing.T, policy fleet.Policy, secondNIC bool) {
	ovmfCode, ovmfVars := "/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"
	var kernel, initrd []byte
	if policy != fleet.PolicyLocal { // local never fetches the live env
		kernelPath := findKernel()
		if kernelPath == "" {
			t.Fatal("no Linux kernel for the guest: set BTY_NETBOOT_KERNEL=/path/to/vmlinuz (or run scripts/vm-image.sh, whose cache has one)")
		}
		var err error
		if kernel, err = os.ReadFile(kernelPath); err != nil {
			t.Fatal(err)
		}
		initrd = buildInitramfs(t)
	}

	// Topology: namespace "lab" holds a bridge with the network's DHCP
	// server (dnsmasq, addresses only) and QEMU's tap; the server
	// namespace holds bty's services on a veth into the bridge.
	n := newNetnsPair(t) // n.server is bty's; n.client is the lab
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	ip("-n", n.client, "link", "add", "br0", "type", "bridge")
	ip("-n", n.client, "link", "set", nsClientIf, "master", "br0")
	ip("-n", n.client, "addr", "add", "192.0.2.254/24", "dev", "br0")
	ip("-n", n.client, "tuntap", "add", "dev", "tap0", "mode", "tap")
	ip("-n", n.client, "link", "set", "tap0", "master", "br0")
	ip("-n", n.client, "link", "set", "tap0", "up")
	ip("-n", n.client, "link", "set", "br0", "up")
	if secondNIC {
		// The first NIC's network: a tap in no bridge, nothing answers.
		ip("-n", n.client, "tuntap", "add", "dev", "tap1", "mode", "tap")
		ip("-n", n.client, "link", "set", "tap1", "up")
	}

	tmp := t.TempDir()
	dhcp := exec.Command("ip", "netns", "exec", n.client, "dnsmasq", "-d", "--conf-file=/dev/null", "--port=0",
		"--interface=br0", "--bind-interfaces", "--log-dhcp", "--dhcp-range=192.0.2.100,192.0.2.150,255.255.255.0,1h",
		"--dhcp-leasefile="+filepath.Join(tmp, "leases"), "--pid-file="+filepath.Join(tmp, "dnsmasq.pid"))
	dhcpOut := &lockedBuffer{}
	dhcp.Stdout, dhcp.Stderr = dhcpOut, dhcpOut
	if err := dhcp.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dhcp.Process.Kill()
		dhcp.Wait()
		t.Logf("network DHCP server (dnsmasq):\n%s", dhcpOut.String())
	})

	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	server := "http://192.0.2.1:8080"
	imageURL := server + "/images/debian 13 ${x}.img"

	// HTTP: the bootstrap, the machine's flash script, the live env.
	var mu sync.Mutex
	var requests []string
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests = append(requests, r.URL.Path)
		mu.Unlock()
		t.Logf("HTTP %s %s from %s", r.Method, r.URL.Path, r.RemoteAddr)
		var body []byte
		var err error
		switch {
		case r.URL.Path == BootstrapPath:
			body, err = Bootstrap(server)
		case strings.HasPrefix(r.URL.Path, "/pxe/"):
			body, err = Script(Params{Policy: policy, ServerURL: server, MAC: fleet.MustParseMAC(strings.TrimPrefix(r.URL.Path, "/pxe/")),
				ImageURL: imageURL, Provisioning: "cloud-init", Hostname: "vm-1", ImageSHA256: testSHA})
		case r.URL.Path == "/boot/"+DefaultKernel:
			body = kernel
		case r.URL.Path == "/boot/"+DefaultInitrd:
			body = initrd
		default:
			http.NotFound(w, r)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Write(body)
	})
	httpSrv := &http.Server{Handler: mux}
	lnc := make(chan net.Listener, 1)
	goInNetns(t, n.server, func() {
		ln, err := net.Listen("tcp4", "192.0.2.1:8080")
		if err != nil {
			t.Error(err)
			lnc <- nil
			return
		}
		lnc <- ln
	})
	ln := <-lnc
	if ln == nil {
		t.FailNow()
	}
	go httpSrv.Serve(ln)
	t.Cleanup(func() { httpSrv.Close() })

	// TFTP on the standard port, served from a goroutine in the server
	// namespace (pin/tftp opens a socket per transfer there).
	tftpSrv := NewTFTP(DefaultIPXEDir, logger)
	ctx, cancel := context.WithCancel(context.Background())
	tftpDone := make(chan struct{})
	goInNetns(t, n.server, func() {
		defer close(tftpDone)
		conn, err := net.ListenPacket("udp4", "0.0.0.0:69")
		if err != nil {
			t.Error(err)
			return
		}
		if err := tftpSrv.Serve(ctx, conn); err != nil {
			t.Error(err)
		}
	})
	t.Cleanup(func() { cancel(); <-tftpDone })

	proxy := NewProxyDHCP(logger)
	startProxy(t, n, proxy, server)
	t.Cleanup(proxy.Stop)

	// The guest: OVMF, virtio-net without an option ROM, so the
	// firmware's own PXE is the first client.
	vars := filepath.Join(tmp, "OVMF_VARS.fd")
	vb, err := os.ReadFile(ovmfVars)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vars, vb, 0o644); err != nil {
		t.Fatal(err)
	}
	accel := os.Getenv("VM_ACCEL")
	if accel == "" {
		accel = "tcg"
	}
	qctx, qcancel := context.WithTimeout(context.Background(), vmTimeout)
	defer qcancel()
	qemu := exec.CommandContext(qctx, "ip", "netns", "exec", n.client, "qemu-system-x86_64",
		"-machine", "q35", "-accel", accel, "-m", "512", "-no-reboot", "-display", "none", "-monitor", "none",
		"-serial", "stdio",
		"-drive", "if=pflash,format=raw,readonly=on,file="+ovmfCode,
		"-drive", "if=pflash,format=raw,file="+vars,
		"-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no")
	if secondNIC {
		// The dead NIC comes first on the bus (iPXE's net0); the lab's
		// NIC is first in the boot order.
		qemu.Args = append(qemu.Args, "-netdev", "tap,id=n1,ifname=tap1,script=no,downscript=no",
			"-device", "virtio-net-pci,netdev=n1,mac="+vmDeadMAC+",romfile=,addr=0x3",
			"-device", "virtio-net-pci,netdev=n0,mac="+vmMAC+",romfile=,addr=0x4,bootindex=1")
	} else {
		qemu.Args = append(qemu.Args, "-device", "virtio-net-pci,netdev=n0,mac="+vmMAC+",romfile=")
	}
	serial := &lockedBuffer{}
	qemu.Stdout, qemu.Stderr = serial, serial
	start := time.Now()
	if err := qemu.Start(); err != nil {
		t.Fatal(err)
	}
	qdone := make(chan error, 1)
	go func() { qdone <- qemu.Wait() }()
	// local: iPXE runs the script, which exits (UEFI), the bootstrap
	// ends iPXE with "exit 1", which iPXE reports as "Could not boot
	// image: Error 0x00000001", and iPXE ends its boot attempt ("Press
	// Ctrl-B" once more before it returns to the firmware); then stop.
	// (That the firmware then boots the disk is e2e's TestPXEReflashCycle,
	// which has a disk to boot.)
	localDone := regexp.MustCompile(`bty: booting from the local disk(?s:.*)Press Ctrl-B for the iPXE command line`)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
wait:
	for {
		select {
		case err := <-qdone:
			t.Logf("QEMU exited after %s: %v", time.Since(start).Round(time.Second), err)
			break wait
		case <-tick.C:
			if policy == fleet.PolicyLocal && localDone.MatchString(serial.String()) {
				t.Logf("iPXE done with the local script after %s", time.Since(start).Round(time.Second))
				qemu.Process.Kill()
				<-qdone
				break wait
			}
		case <-qctx.Done():
			t.Errorf("the guest did not finish within %s", vmTimeout)
			qemu.Process.Kill()
			<-qdone
			break wait
		}
	}
	out := serial.String()
	if p := os.Getenv("BTY_VMTEST_SERIAL"); p != "" {
		os.WriteFile(p, []byte(out), 0o644)
	}
	t.Logf("serial console:\n%s", tail(out, 4000))

	// What each stage proves.
	mu.Lock()
	got := strings.Join(requests, " ")
	mu.Unlock()
	mac := strings.ReplaceAll(vmMAC, ":", "-")
	wantReqs := []string{BootstrapPath, "/pxe/" + mac, "/boot/" + DefaultKernel, "/boot/" + DefaultInitrd}
	if policy == fleet.PolicyLocal {
		wantReqs = wantReqs[:2]
		if strings.Contains(got, "/boot/") {
			t.Errorf("policy local fetched the live env: %s", got)
		}
		if !localDone.MatchString(out) {
			t.Errorf("iPXE did not finish after the local script")
		}
		// What iPXE printed after the script's echo: the bootstrap's exit
		// status 1 (a success would stop a UEFI boot manager at its
		// menu), and no other error.
		seg := localDone.FindString(out)
		const exitStatus = "Could not boot image: Error 0x00000001"
		if !strings.Contains(seg, exitStatus) {
			t.Errorf("iPXE did not end with the bootstrap's failure status (no %q after the local script)", exitStatus)
		}
		rest := strings.Replace(seg, exitStatus, "", 1)
		for _, bad := range []string{"no boot script", "Could not", "not found", "Invalid", "No such", "rror"} {
			if strings.Contains(rest, bad) {
				t.Errorf("iPXE reported %q running the local script", bad)
			}
		}
	}
	for _, want := range wantReqs {
		if !strings.Contains(got, want) {
			t.Errorf("no HTTP request for %s (requests: %s)", want, got)
		}
	}
	if secondNIC {
		if dead := "/pxe/" + strings.ReplaceAll(vmDeadMAC, ":", "-"); strings.Contains(got, dead) {
			t.Errorf("the bootstrap asked by the first NIC's MAC: %s", got)
		}
		// iPXE numbered the NICs as found: the boot NIC is not net0, so
		// ${net0/mac} would have named the dead one.
		if m := regexp.MustCompile(`(net\d+): ` + vmMAC).FindStringSubmatch(out); m == nil || m[1] == "net0" {
			t.Errorf("iPXE's name of the boot NIC %s: %v, want one other than net0 (else this test proves nothing about netX)", vmMAC, m)
		}
	}
	if st := tftpSrv.Stats(); st.Bytes == 0 {
		t.Errorf("no bytes sent over TFTP: %+v", st)
	}
	if st := proxy.Stats(); st.Replies < 2 {
		t.Errorf("proxy-DHCP replies %+v: want the firmware's and iPXE's", st)
	}
	if policy == fleet.PolicyLocal {
		return
	}
	script, err := Script(Params{Policy: fleet.PolicyFlash, ServerURL: server, MAC: fleet.MustParseMAC(vmMAC),
		ImageURL: imageURL, Provisioning: "cloud-init", Hostname: "vm-1", ImageSHA256: testSHA})
	if err != nil {
		t.Fatal(err)
	}
	kline := strings.Fields(lineWithPrefix(t, script, "kernel "))
	wantArgs := strings.Join(kline[2:len(kline)-3], " ") // without "kernel URL" and "|| goto failed"
	i := strings.Index(out, "BTY-CMDLINE: ")
	if i < 0 {
		t.Fatalf("the guest's /init did not print its command line")
	}
	line, _, _ := strings.Cut(out[i+len("BTY-CMDLINE: "):], "\n")
	// iPXE puts the image's name first, as argv[0].
	line = strings.TrimPrefix(strings.TrimSpace(line), DefaultKernel+" ")
	if gotArgs := strings.Join(strings.Fields(line), " "); gotArgs != wantArgs {
		t.Errorf("guest kernel command line\n got %s\nwant %s", gotArgs, wantArgs)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

var _ io.Writer = (*lockedBuffer)(nil)

// vmTimeout bounds the guest's run: OVMF's PXE, iPXE and the kernel take
// 40-60 s under TCG on this kind of machine.
var vmTimeout = 3 * time.Minute
