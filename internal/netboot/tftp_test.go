package netboot

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// tftpDir makes a directory with undionly.kpxe and ipxe.efi (copies of
// Debian's when the ipxe package is installed, random bytes otherwise),
// no snponly.efi, and bait beside and above it.
func tftpDir(t *testing.T) (dir string, files map[string][]byte) {
	t.Helper()
	root := t.TempDir()
	dir = filepath.Join(root, "ipxe")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	files = map[string][]byte{}
	for name, size := range map[string]int{"undionly.kpxe": 70_000, "ipxe.efi": 1_000_000} {
		b, err := os.ReadFile(filepath.Join(DefaultIPXEDir, name))
		if err != nil {
			t.Logf("%v: serving random bytes instead (apt-get install ipxe for the real binaries)", err)
			b = make([]byte, size)
			rand.Read(b)
		}
		files[name] = b
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, b := range map[string]string{
		filepath.Join(dir, "other.bin"):  "not an iPXE binary",
		filepath.Join(root, "secret"):    "outside the TFTP directory",
		filepath.Join(dir, "ipxe.efi.1"): "a near miss",
	} {
		if err := os.WriteFile(name, []byte(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir, files
}

// startTFTP serves dir on a loopback high port until the test ends.
func startTFTP(t *testing.T, dir string) (*TFTP, string) {
	t.Helper()
	srv := NewTFTP(dir, slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})))
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, conn) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve after cancel: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("Serve did not return after cancel")
		}
	})
	return srv, conn.LocalAddr().String()
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// curlTFTP fetches name from addr with curl; it returns the body and
// curl's exit code.
func curlTFTP(t *testing.T, addr, name string, extra ...string) ([]byte, int, string) {
	t.Helper()
	args := append([]string{"-sS", "--path-as-is", "--max-time", "20"}, extra...)
	args = append(args, "tftp://"+addr+"/"+name)
	cmd := exec.Command("curl", args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.Bytes(), ee.ExitCode(), errb.String()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.Bytes(), 0, errb.String()
}

func needCurl(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed (scripts/install-deps.sh test installs it): it is the real TFTP client of this test")
	}
}

func TestTFTPServesIPXEBinaries(t *testing.T) {
	needCurl(t)
	dir, files := tftpDir(t)
	srv, addr := startTFTP(t, dir)
	reg := prometheus.NewRegistry()
	if err := srv.Register(reg); err != nil {
		t.Fatal(err)
	}

	var total int64
	for name, want := range files {
		for _, blk := range []string{"", "1468"} {
			var extra []string
			if blk != "" {
				extra = []string{"--tftp-blksize", blk}
			}
			got, code, stderr := curlTFTP(t, addr, name, extra...)
			if code != 0 {
				t.Fatalf("curl %s (blksize %q): exit %d: %s", name, blk, code, stderr)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s (blksize %q): got %d bytes, want the file's %d", name, blk, len(got), len(want))
			}
			total += int64(len(want))
		}
	}

	refused := []string{
		"../secret", "..%2Fsecret", "/undionly.kpxe", "ipxe/../undionly.kpxe", "other.bin", "ipxe.efi.1",
		"UNDIONLY.KPXE", "snponly.efi", // allowed name, missing file
	}
	for _, name := range refused {
		got, code, stderr := curlTFTP(t, addr, name)
		if code == 0 || len(got) != 0 {
			t.Errorf("%q: curl exit %d with %d bytes, want a refusal", name, code, len(got))
		}
		// curl exit 68: "TFTP: File Not Found".
		if code != 68 {
			t.Errorf("%q: curl exit %d (%s), want 68 (file not found)", name, code, strings.TrimSpace(stderr))
		}
	}

	// A write (curl -T uploads) is refused and writes nothing.
	up := filepath.Join(t.TempDir(), "up")
	if err := os.WriteFile(up, []byte("overwrite"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, code, _ := curlTFTP(t, addr, "undionly.kpxe", "-T", up); code == 0 {
		t.Errorf("upload of undionly.kpxe succeeded")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "undionly.kpxe")); !bytes.Equal(b, files["undionly.kpxe"]) {
		t.Errorf("undionly.kpxe changed after an upload")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 4 {
		t.Errorf("the directory has %d entries after an upload, want 4", len(entries))
	}

	st := srv.Stats()
	want := TFTPStats{Requests: int64(2*len(files) + len(refused) + 1), Refused: int64(len(refused) + 1), Bytes: total}
	if st != want {
		t.Errorf("Stats() = %+v, want %+v", st, want)
	}
	m := gather(t, reg)
	if got := m["bty_tftp_bytes_sent_total"]; got != float64(total) {
		t.Errorf("bty_tftp_bytes_sent_total = %v, want %d", got, total)
	}
	if got := m["bty_tftp_requests_total"]; got != float64(want.Requests) {
		t.Errorf("bty_tftp_requests_total = %v, want %d", got, want.Requests)
	}
}

// TestTFTPRefusesNUL: a NUL cannot be sent in a TFTP file name (it ends
// the name on the wire), so the handler is called directly.
func TestTFTPRefusesNUL(t *testing.T) {
	dir, _ := tftpDir(t)
	srv := NewTFTP(dir, nil)
	for _, name := range []string{"undionly.kpxe\x00", "\x00undionly.kpxe", "ipxe.efi\x00.txt"} {
		var rf fakeReaderFrom
		if err := srv.read(name, &rf); err == nil || rf.n != 0 {
			t.Errorf("%q: err %v after %d bytes, want a refusal", name, err, rf.n)
		}
	}
	if st := srv.Stats(); st.Refused != 3 || st.Bytes != 0 {
		t.Errorf("Stats() = %+v, want 3 refused, 0 bytes", st)
	}
}

type fakeReaderFrom struct{ n int64 }

func (f *fakeReaderFrom) ReadFrom(r io.Reader) (int64, error) {
	n, err := io.Copy(io.Discard, r)
	f.n += n
	return n, err
}

func TestTFTPListenError(t *testing.T) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	err = NewTFTP("", nil).ListenAndServe(context.Background(), conn.LocalAddr().String())
	if err == nil || !strings.Contains(err.Error(), "BTY_TFTP_PORT") {
		t.Errorf("ListenAndServe on a busy port: %v, want an error naming BTY_TFTP_PORT", err)
	}
}

// gather sums every metric family of reg over its labels.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sums := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if c := m.GetCounter(); c != nil {
				sums[mf.GetName()] += c.GetValue()
			}
		}
	}
	return sums
}

// metricValue is the value of name with exactly the given labels.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}
