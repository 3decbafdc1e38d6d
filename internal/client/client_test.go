package client_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/client"
	"github.com/btyproject/bty/internal/client/clienttest"
	"github.com/btyproject/bty/internal/fleet"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

func TestNormalizeServer(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{"http://localhost:8080", "http://localhost:8080", false},
		{"http://localhost:8080/", "http://localhost:8080", false},
		{"localhost:8080", "http://localhost:8080", false},
		{"https://pxe.lab/bty/", "https://pxe.lab/bty", false},
		{" http://10.0.0.1:8080 ", "http://10.0.0.1:8080", false},
		{"", "", true},
		{"ftp://host", "", true},
		{"http://", "", true},
		{"http://host:8080/?x=1", "", true},
		{"http://user:pw@host", "", true},
	}
	for _, tc := range tests {
		got, err := client.NormalizeServer(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("NormalizeServer(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func loggedIn(t *testing.T) (*clienttest.Server, *client.Client) {
	t.Helper()
	ts := clienttest.Start(t, nil)
	c, err := client.New(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.Login(ctx(t), clienttest.Password)
	if err != nil {
		t.Fatalf("Login: %v", err)
	}
	if s.Token == "" || c.Token() != s.Token || time.Until(s.ExpiresAt) < 50*time.Minute {
		t.Fatalf("Login = %+v; client token %q", s, c.Token())
	}
	return ts, c
}

func TestLoginWrongPassword(t *testing.T) {
	t.Parallel()
	ts := clienttest.Start(t, nil)
	c, _ := client.New(ts.URL)
	_, err := c.Login(ctx(t), "not the password")
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusUnauthorized || ae.Message != "wrong password" || !client.IsUnauthorized(err) {
		t.Fatalf("Login with a wrong password: %#v", err)
	}
	if c.Token() != "" {
		t.Errorf("a refused login left token %q", c.Token())
	}
}

func TestMachines(t *testing.T) {
	t.Parallel()
	ts, c := loggedIn(t)
	cx := ctx(t)

	// Without a token the server refuses.
	anon, _ := client.New(ts.URL)
	if _, err := anon.Machines(cx); !client.IsUnauthorized(err) {
		t.Fatalf("Machines without a token: %v, want 401", err)
	}

	ms, err := c.Machines(cx)
	if err != nil || ms == nil || len(ms) != 0 {
		t.Fatalf("Machines on an empty server = %#v, %v; want an empty, non-nil list", ms, err)
	}
	str := func(s string) *string { return &s }
	pol := func(s fleet.Policy) *fleet.Policy { return &s }
	mode := func(s fleet.Mode) *fleet.Mode { return &s }
	m, created, err := c.PutMachine(cx, fleet.MustParseMAC("AA-BB-CC-DD-EE-0F"), api.MachineUpdate{
		BootPolicy: pol(fleet.PolicyFlash), Hostname: str("node7"), ProvisioningMode: mode(fleet.ModeCloudInit)})
	if err != nil || !created {
		t.Fatalf("PutMachine (new) = created %v, %v", created, err)
	}
	if m.MAC.String() != "aa:bb:cc:dd:ee:0f" || m.BootPolicy != "flash" || m.Hostname != "node7" || m.ProvisioningMode != "cloud-init" {
		t.Errorf("PutMachine answered %+v", m)
	}
	// Only the fields sent change.
	m2, created, err := c.PutMachine(cx, fleet.MustParseMAC("aa:bb:cc:dd:ee:0f"), api.MachineUpdate{Hostname: str("")})
	if err != nil || created || m2.Hostname != "" || m2.BootPolicy != "flash" || m2.ProvisioningMode != "cloud-init" {
		t.Fatalf("PutMachine (update) = %+v, created %v, %v", m2, created, err)
	}
	got, err := c.Machine(cx, fleet.MustParseMAC("AA:BB:CC:DD:EE:0F"))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(m2, got); d != "" {
		t.Errorf("Machine differs from the PUT answer (-put +get):\n%s", d)
	}
	if ms, err := c.Machines(cx); err != nil || len(ms) != 1 || ms[0].MAC.String() != "aa:bb:cc:dd:ee:0f" {
		t.Errorf("Machines = %+v, %v", ms, err)
	}
	// The server's refusals come back as its messages.
	_, _, err = c.PutMachine(cx, fleet.MustParseMAC("aa:bb:cc:dd:ee:0f"), api.MachineUpdate{BootPolicy: pol("sometimes")})
	if client.StatusCode(err) != 400 || !strings.Contains(err.Error(), `"sometimes" is not one of`) {
		t.Errorf("PutMachine with a bad policy: %v", err)
	}
	if err := c.DeleteMachine(cx, fleet.MustParseMAC("aa-bb-cc-dd-ee-0f")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Machine(cx, fleet.MustParseMAC("aa:bb:cc:dd:ee:0f")); !client.IsNotFound(err) || !strings.Contains(err.Error(), "no machine aa:bb:cc:dd:ee:0f") {
		t.Errorf("Machine after delete: %v", err)
	}
	if err := c.DeleteMachine(cx, fleet.MustParseMAC("aa:bb:cc:dd:ee:0f")); !client.IsNotFound(err) {
		t.Errorf("second DeleteMachine: %v", err)
	}
}

func TestPXEDone(t *testing.T) {
	t.Parallel()
	ts, c := loggedIn(t)
	cx := ctx(t)
	anon, _ := client.New(ts.URL)
	mac := fleet.MustParseMAC("52:54:00:12:34:56")
	// An unknown machine and a known one outside its cycle get the same
	// 403: the open route tells a stranger nothing.
	if err := anon.PXEDone(cx, mac, "", fleet.Progress{}); !client.IsForbidden(err) {
		t.Fatalf("PXEDone for an unknown machine: %v, want 403", err)
	}
	// A PXE contact registers the machine (tui) and opens its cycle;
	// done needs the cycle's token.
	_, cycle := clienttest.PXEBoot(t, ts.URL, mac)
	if cycle == "" {
		t.Fatal("the discovery script carries no bty.cycle")
	}
	if err := anon.PXEDone(cx, mac, fleet.NewCycleToken(), fleet.Progress{}); !client.IsForbidden(err) {
		t.Fatalf("PXEDone with a wrong token: %v, want 403", err)
	}
	before := time.Now().Add(-time.Second)
	if err := anon.PXEDone(cx, mac, cycle, fleet.Progress{}); err != nil {
		t.Fatal(err)
	}
	m, err := c.Machine(cx, mac)
	if err != nil || m.LastFlashedAt == nil || m.LastFlashedAt.Before(before) || m.BootPolicy != "tui" || m.DiscoveredAt == nil {
		t.Errorf("Machine after done = %+v, %v", m, err)
	}
	// Once per cycle.
	if err := anon.PXEDone(cx, mac, cycle, fleet.Progress{}); !client.IsForbidden(err) {
		t.Errorf("second PXEDone in the cycle: %v, want 403", err)
	}
}

// TestPXESeed: the live env's seed fetch gets the record's user-data
// and the server-made meta-data only in the machine's flash cycle, with
// its token, once; and nil user-data (not an error) when there is none.
func TestPXESeed(t *testing.T) {
	t.Parallel()
	ts, c := loggedIn(t)
	cx := ctx(t)
	anon, _ := client.New(ts.URL)
	mac := fleet.MustParseMAC("52:54:00:12:34:58")
	ud := "#cloud-config\nhostname: n58\n"
	pol, img := fleet.PolicyFlash, "a.img"
	if _, _, err := c.PutMachine(cx, mac, api.MachineUpdate{BootPolicy: &pol, Image: &img, UserData: &ud}); err != nil {
		t.Fatal(err)
	}
	// Before any PXE contact the machine has no flash cycle.
	if _, _, err := anon.PXESeed(cx, mac, fleet.NewCycleToken()); !client.IsForbidden(err) {
		t.Fatalf("PXESeed before the contact: %v, want 403", err)
	}
	_, cycle := clienttest.PXEBoot(t, ts.URL, mac)
	if _, _, err := anon.PXESeed(cx, mac, ""); !client.IsForbidden(err) {
		t.Fatalf("PXESeed without the token: %v, want 403", err)
	}
	u, m, err := anon.PXESeed(cx, mac, cycle)
	if err != nil || string(u) != ud || !strings.HasPrefix(string(m), "instance-id: bty-525400123458-") {
		t.Fatalf("PXESeed in the flash cycle = %q, %q, %v", u, m, err)
	}
	// Released once per cycle.
	if _, _, err := anon.PXESeed(cx, mac, cycle); !client.IsForbidden(err) {
		t.Fatalf("second PXESeed in the cycle: %v, want 403", err)
	}
	// A record without user-data: nil, not an error, in a new cycle.
	empty := ""
	if _, _, err := c.PutMachine(cx, mac, api.MachineUpdate{UserData: &empty}); err != nil {
		t.Fatal(err)
	}
	_, cycle = clienttest.PXEBoot(t, ts.URL, mac)
	if u, m, err := anon.PXESeed(cx, mac, cycle); err != nil || u != nil || m != nil {
		t.Fatalf("PXESeed with no user-data = %q, %q, %v; want nothing", u, m, err)
	}
}

func TestPXEFailed(t *testing.T) {
	t.Parallel()
	ts, c := loggedIn(t)
	cx := ctx(t)
	anon, _ := client.New(ts.URL)
	mac := fleet.MustParseMAC("52:54:00:12:34:57")
	if err := anon.PXEFailed(cx, mac, "", "x"); !client.IsForbidden(err) {
		t.Fatalf("PXEFailed for an unknown machine: %v, want 403", err)
	}
	_, cycle := clienttest.PXEBoot(t, ts.URL, mac)
	if err := anon.PXEFailed(cx, mac, cycle, "no disk\nfound\x1b[2J"); err != nil {
		t.Fatal(err)
	}
	m, err := c.Machine(cx, mac)
	if err != nil || m.LastFailure != "no disk found [2J" || m.LastFailedAt == nil || m.LastFlashedAt != nil {
		t.Errorf("Machine after failed = %+v, %v", m, err)
	}
}

// zstdImage makes a real .img.zst with the zstd CLI and returns its path
// and bytes.
func zstdImage(t *testing.T, dir string) (string, []byte) {
	t.Helper()
	if _, err := exec.LookPath("zstd"); err != nil {
		t.Skip("zstd CLI not installed (apt-get install zstd)")
	}
	raw := make([]byte, 4<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < len(raw)/2; i++ {
		raw[i] = byte(r.IntN(16)) // compressible, not trivial
	}
	rawPath := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(rawPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "disk.img.zst")
	if b, err := exec.Command("zstd", "-q", "-f", "-o", out, rawPath).CombinedOutput(); err != nil {
		t.Fatalf("zstd: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return out, b
}

func TestUploadImage(t *testing.T) {
	t.Parallel()
	ts, c := loggedIn(t)
	cx := ctx(t)
	_, data := zstdImage(t, t.TempDir())
	sum := sha256.Sum256(data)
	hexSum := hex.EncodeToString(sum[:])

	var calls, last atomic.Int64
	img, replaced, err := c.UploadImage(cx, "debian.img.zst", bytes.NewReader(data), int64(len(data)), client.UploadOptions{
		SHA256: strings.ToUpper(hexSum),
		Progress: func(sent, total int64) {
			calls.Add(1)
			last.Store(sent)
			if total != int64(len(data)) {
				t.Errorf("progress total %d, want %d", total, len(data))
			}
		},
	})
	if err != nil {
		t.Fatalf("UploadImage: %v", err)
	}
	if replaced || img.Name != "debian.img.zst" || img.Format != "zst" || img.SizeBytes != int64(len(data)) {
		t.Errorf("UploadImage = %+v, replaced %v", img, replaced)
	}
	if calls.Load() == 0 || last.Load() != int64(len(data)) {
		t.Errorf("progress: %d calls, last %d; want the whole %d bytes reported", calls.Load(), last.Load(), len(data))
	}
	onDisk, err := os.ReadFile(filepath.Join(ts.Config.ImageRoot, "debian.img.zst"))
	if err != nil || !bytes.Equal(onDisk, data) {
		t.Fatalf("the server's copy differs from the upload (%v)", err)
	}
	// Same name again: replaced.
	if _, replaced, err := c.UploadImage(cx, "debian.img.zst", bytes.NewReader(data), int64(len(data)), client.UploadOptions{}); err != nil || !replaced {
		t.Errorf("second upload: replaced %v, %v", replaced, err)
	}
	imgs, err := c.Images(cx)
	if err != nil || len(imgs) != 1 || imgs[0].Name != "debian.img.zst" || imgs[0].Format != "zst" {
		t.Fatalf("Images = %+v, %v", imgs, err)
	}
	// The server hashes in the background; the catalog shows it soon.
	deadline := time.Now().Add(30 * time.Second)
	for imgs[0].SHA256 == nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		if imgs, err = c.Images(cx); err != nil {
			t.Fatal(err)
		}
	}
	if imgs[0].SHA256 == nil || *imgs[0].SHA256 != hexSum {
		t.Errorf("catalog sha256 = %v, want %s", imgs[0].SHA256, hexSum)
	}

	refusals := []struct {
		name, file string
		body       []byte
		sha        string
		want       string
	}{
		{"lying suffix", "raw.img.zst", bytes.Repeat([]byte{1}, 100<<10), "", `says zst`},
		{"large lying suffix", "big.qcow2", data[:len(data)/2], "", `says qcow2`},
		{"sha mismatch", "other.img.zst", data, strings.Repeat("0", 64), "sha256 mismatch"},
		{"no suffix", "notes.txt", data, "", "has no image suffix"},
		{"traversal", "../x.img", data, "", "path separator"},
	}
	for _, r := range refusals {
		_, _, err := c.UploadImage(cx, r.file, bytes.NewReader(r.body), int64(len(r.body)), client.UploadOptions{SHA256: r.sha})
		if client.StatusCode(err) != 400 || !strings.Contains(err.Error(), r.want) {
			t.Errorf("%s: UploadImage = %v; want 400 containing %q", r.name, err, r.want)
		}
	}
	// Nothing refused was kept.
	if imgs, err := c.Images(cx); err != nil || len(imgs) != 1 {
		t.Errorf("after refusals Images = %+v, %v", imgs, err)
	}
	// Uploads need a session.
	anon, _ := client.New(ts.URL)
	if _, _, err := anon.UploadImage(cx, "x.img.zst", bytes.NewReader(data), int64(len(data)), client.UploadOptions{}); !client.IsUnauthorized(err) {
		t.Errorf("upload without a token: %v", err)
	}
}

func TestBootAndSettings(t *testing.T) {
	t.Parallel()
	_, c := loggedIn(t)
	cx := ctx(t)
	files, err := c.BootFiles(cx)
	if err != nil || len(files) < 2 || files[0].Present {
		t.Fatalf("BootFiles on an empty server = %+v, %v", files, err)
	}
	kernel := []byte("not really a kernel, the server does not care")
	b, replaced, err := c.UploadBoot(cx, files[0].Name, bytes.NewReader(kernel), int64(len(kernel)), client.UploadOptions{})
	sum := sha256.Sum256(kernel)
	if err != nil || replaced || b.SizeBytes != int64(len(kernel)) || b.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("UploadBoot = %+v, %v, %v", b, replaced, err)
	}
	files, err = c.BootFiles(cx)
	if err != nil || !files[0].Present || files[0].SizeBytes != int64(len(kernel)) || files[0].ModifiedAt == nil {
		t.Errorf("BootFiles after upload = %+v, %v", files, err)
	}

	s, err := c.Settings(cx)
	if err != nil {
		t.Fatal(err)
	}
	if s.ProxyDHCPIface != "" || len(s.Interfaces) == 0 {
		t.Errorf("Settings = %+v", s)
	}
	foundLo := false
	for _, i := range s.Interfaces {
		foundLo = foundLo || i.Name == "lo"
	}
	if !foundLo {
		t.Errorf("Settings lists no lo interface: %+v", s.Interfaces)
	}
	iface := "bty-no-such0"
	_, err = c.PutSettings(cx, api.SettingsUpdate{ProxyDHCPIface: &iface})
	if client.StatusCode(err) != 400 {
		t.Errorf("PutSettings with a missing interface: %v, want 400", err)
	}
}

func TestLogout(t *testing.T) {
	t.Parallel()
	_, c := loggedIn(t)
	cx := ctx(t)
	if err := c.Logout(cx); err != nil {
		t.Fatal(err)
	}
	_, err := c.Machines(cx)
	if !client.IsUnauthorized(err) || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("Machines with a revoked token: %v", err)
	}
}

func TestUnreachable(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String()
	l.Close()
	c, _ := client.New(url)
	_, err = c.Images(ctx(t))
	var ce *client.ConnError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "cannot reach bty-web at "+url) || client.StatusCode(err) != 0 {
		t.Errorf("Images from a closed port: %v", err)
	}
	// A cancelled context is the context's error, not a connection error.
	cx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Images(cx); !errors.Is(err, context.Canceled) {
		t.Errorf("Images with a cancelled context: %v", err)
	}
}

// A proxy in front of the server may answer with HTML; the message
// still says what happened.
func TestNonJSONError(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "<html>502 Bad Gateway</html>", http.StatusBadGateway)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	c, _ := client.New("http://" + l.Addr().String())
	_, err = c.Images(ctx(t))
	if client.StatusCode(err) != 502 || !strings.Contains(err.Error(), "502 Bad Gateway") || !strings.Contains(err.Error(), "GET http://") {
		t.Errorf("Images through a failing proxy: %v", err)
	}
}
