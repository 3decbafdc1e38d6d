package e2e

// TestServerApplianceBoot (BTY_VMTEST=1, root) boots the server appliance
// image bty-media builds as the only disk of a UEFI QEMU guest on the lab
// bridge, where the network's DHCP server (dnsmasq) gives it a fixed
// address. The live env mounts BTY_STATE, bty-web's first start prints a
// generated admin password on the console, and the appliance says where
// bty-web runs. From the lab: a PXE contact (GET /pxe/MAC) is answered
// with the tui script pointing at the appliance's own netboot files, which
// it serves; the printed password logs in and a wrong one does not; the
// machine list needs the session and holds the machine just discovered.
// Then the appliance boots again from the same disk: no new password is
// printed, the first one still works and the machine is still there.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/api"
)

const (
	serverMAC     = "52:54:00:b7:e2:02"
	serverIP      = "192.0.2.60"
	discoveredMAC = "52:54:00:b7:e2:99"
)

func TestServerApplianceBoot(t *testing.T) {
	needVMTest(t, "boots the bty-media server appliance image in a UEFI guest on a lab network and uses its bty-web (about 3 minutes)",
		toolQEMU, toolOVMF, toolIP, toolDnsmasq)
	repo := repoRoot(t)
	tmp := t.TempDir()

	disk := filepath.Join(tmp, "server.img")
	mediaTook := runBtyMedia(t, repo, "server", "--out", disk, "--state-size", "1GiB", "--cache", filepath.Join(repo, ".cache", "bty-media"))
	parts := gptPartitions(t, disk)
	findPart(t, parts, "BTY_LIVE")
	if p := findPart(t, parts, "BTY_STATE"); p.bytes != 1<<30 {
		t.Errorf("BTY_STATE is %d bytes, want --state-size 1GiB", p.bytes)
	}

	l := newLab(t, false, serverMAC+","+serverIP)
	vars := copyVars(t, tmp)
	tap := l.addTap(t)
	guest := []string{
		"-netdev", "tap,id=n0,ifname=" + tap + ",script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,mac=" + serverMAC + ",romfile=",
		"-drive", "if=none,id=d0,format=raw,file=" + disk,
		"-device", "virtio-blk-pci,drive=d0,bootindex=1",
		"-device", "virtio-rng-pci",
	}
	base := "http://" + serverIP + ":8080"

	var phases []phase
	media := fmt.Sprintf("MEDIA bty-media-server %ds", int(mediaTook.Round(time.Second).Seconds()))
	defer func() { reportPhases(t, phases, media) }()

	// Run 1: first boot.
	v1 := startVM(t, "run1-first-boot", l.ns, vars, 1024, 6*time.Minute, guest...)
	live := v1.expect(t, `bty-live: starting \(server, bty .+, kernel \S+\)`, 4*time.Minute)
	phases = append(phases, phase{"server-to-live-env", live.at})
	v1.expect(t, `bty-live: state partition BTY_STATE mounted at /var/lib/bty$`, 2*time.Minute)
	gen := v1.expect(t, `bty-web: no admin password was set; generated one`, 2*time.Minute)
	// The password is the next non-blank line (not logged here).
	pwLine, i, err := v1.waitLine(regexp.MustCompile(`^\s+\S+\s*$`), v1.cursor, 10*time.Second)
	if err != nil {
		t.Fatalf("no password line after %q: %v", gen.text, err)
	}
	v1.cursor = i + 1
	password := strings.TrimSpace(pwLine.text)
	up := waitHealthy(t, l.ns, base, v1, 2*time.Minute)
	phases = append(phases, phase{"server-to-bty-web", up})
	expectRunning(t, v1)
	t.Logf("generated password printed %.1fs after power-on (%d characters)", gen.at.Seconds(), len(password))

	// A PXE contact from an unknown machine: the tui script, pointing at
	// the appliance's own live env, which it serves.
	code, script := get(t, l.ns, base+"/pxe/"+strings.ReplaceAll(discoveredMAC, ":", "-"))
	if code != 200 || !strings.HasPrefix(script, "#!ipxe") {
		t.Fatalf("GET /pxe/%s: %d %q, want 200 and an iPXE script", discoveredMAC, code, tail(script, 500))
	}
	for _, want := range []string{"boot policy tui", "bty.mode=interactive", "bty.mac=" + discoveredMAC,
		"kernel " + base + "/boot/" + liveKernel, "initrd " + base + "/boot/" + liveInitrd} {
		if !strings.Contains(script, want) {
			t.Errorf("the PXE script of an unknown machine lacks %q:\n%s", want, script)
		}
	}
	for _, name := range []string{liveKernel, liveInitrd} {
		code, body := get(t, l.ns, base+"/boot/"+name, "Range", "bytes=0-1023")
		if code != http.StatusPartialContent || len(body) != 1024 {
			t.Errorf("GET /boot/%s (first KiB): %d, %d bytes; want 206 and 1024 bytes (the appliance serves its netboot pair)", name, code, len(body))
		}
	}

	// Sessions: the printed password works, a wrong one does not, and the
	// machine list needs the session.
	if code, _ := login(t, l.ns, base, password+"x"); code != http.StatusUnauthorized {
		t.Errorf("login with a wrong password: %d, want 401", code)
	}
	code, token := login(t, l.ns, base, password)
	if code != 200 || token == "" {
		t.Fatalf("login with the printed password: %d (token %q), want 200 and a token", code, token)
	}
	if code, _ := get(t, l.ns, base+"/machines"); code != http.StatusUnauthorized {
		t.Errorf("GET /machines without a session: %d, want 401", code)
	}
	checkDiscovered(t, l.ns, base, token)
	v1.stop()
	if v1.serial.all(regexp.MustCompile(`FLASH FAILED|INTERNAL ERROR|bty-web exited`)) != nil {
		t.Errorf("the appliance reported trouble: %q", v1.serial.all(regexp.MustCompile(`FLASH FAILED|INTERNAL ERROR|bty-web exited`))[0].text)
	}

	// Run 2: the same disk boots again; the state persisted.
	v2 := startVM(t, "run2-second-boot", l.ns, vars, 1024, 6*time.Minute, guest...)
	v2.expect(t, `bty-live: state partition BTY_STATE mounted at /var/lib/bty$`, 4*time.Minute)
	up2 := waitHealthy(t, l.ns, base, v2, 2*time.Minute)
	phases = append(phases, phase{"server-reboot-to-bty-web", up2})
	expectRunning(t, v2)
	if g := v2.serial.all(regexp.MustCompile(`generated one`)); len(g) > 0 {
		t.Errorf("the second boot printed a new admin password (%q): the first one's hash should have persisted on BTY_STATE", g[0].text)
	}
	code, token = login(t, l.ns, base, password)
	if code != 200 || token == "" {
		t.Fatalf("second boot: login with the first boot's password: %d, want 200", code)
	}
	checkDiscovered(t, l.ns, base, token)
	v2.stop()
}

// waitHealthy waits for the appliance's bty-web to answer GET /healthz
// from the lab and returns when it first did, since power-on.
func waitHealthy(t *testing.T, ns, base string, v *vm, timeout time.Duration) time.Duration {
	t.Helper()
	c := httpIn(ns)
	c.Timeout = 3 * time.Second
	deadline := time.Now().Add(timeout)
	for {
		if resp, err := c.Get(base + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				at := time.Since(v.start)
				t.Logf("QEMU %s: bty-web answers %s/healthz from the lab after %s", v.name, base, at.Round(time.Second))
				return at
			}
		}
		if v.exited() || time.Now().After(deadline) {
			t.Fatalf("QEMU %s: the appliance's bty-web did not answer %s/healthz from the lab (%s); serial tail:\n%s",
				v.name, base, v.status(), tail(v.serial.Timed(), 3000))
		}
		time.Sleep(time.Second)
	}
}

// expectRunning checks that the live env said where bty-web runs, at the
// latest a few seconds after bty-web answered.
func expectRunning(t *testing.T, v *vm) {
	t.Helper()
	re := regexp.MustCompile(`bty-live: bty-web running on http://` + regexp.QuoteMeta(serverIP) + `:8080\b`)
	if ln, _, err := v.waitLine(re, 0, 15*time.Second); err != nil {
		t.Errorf("QEMU %s: bty-web answers from the lab, but the console never said /%s/ (%v)", v.name, re, err)
	} else {
		t.Logf("QEMU %s [%6.1fs] %s", v.name, ln.at.Seconds(), ln.text)
	}
}

// login POSTs /auth/login from inside ns and returns the status and the
// token.
func login(t *testing.T, ns, base, password string) (int, string) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"password": password})
	resp, err := httpIn(ns).Post(base+"/auth/login", "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("POST %s/auth/login: %v", base, err)
	}
	defer resp.Body.Close()
	var doc struct {
		Token string `json:"token"`
	}
	json.NewDecoder(resp.Body).Decode(&doc)
	return resp.StatusCode, doc.Token
}

// checkDiscovered checks that GET /machines/MAC, with the session, shows
// the machine the PXE contact discovered (boot policy tui).
func checkDiscovered(t *testing.T, ns, base, token string) {
	t.Helper()
	code, body := get(t, ns, base+"/machines/"+discoveredMAC, "Authorization", "Bearer "+token)
	if code != 200 {
		t.Fatalf("GET /machines/%s with the session: %d %s", discoveredMAC, code, tail(body, 500))
	}
	var m api.Machine
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("GET /machines/%s: %v\n%s", discoveredMAC, err, body)
	}
	if m.MAC.String() != discoveredMAC || m.BootPolicy != "tui" || m.DiscoveredAt == nil || m.LastSeenIP != labBridgeIP {
		t.Errorf("machine %s: %+v, want it discovered (boot policy tui, discovered_at set) and last seen from %s", discoveredMAC, m, labBridgeIP)
	}
}
