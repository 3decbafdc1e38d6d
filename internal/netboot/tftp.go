package netboot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pin/tftp/v3"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultIPXEDir is where Debian's ipxe package installs its binaries.
const DefaultIPXEDir = "/usr/lib/ipxe"

// IPXEFiles are the only names the TFTP server serves: iPXE for BIOS PXE
// ROMs (undionly.kpxe) and for UEFI (ipxe.efi with its own drivers,
// snponly.efi on the firmware's network stack).
var IPXEFiles = []string{"undionly.kpxe", "ipxe.efi", "snponly.efi"}

// TFTP is a read-only TFTP server for the iPXE binaries in one directory.
// Any other name, a path, and every write request are refused. Use
// NewTFTP, then Serve or ListenAndServe; Register exposes its counters.
type TFTP struct {
	dir    string
	logger *slog.Logger

	requests *prometheus.CounterVec // by file ("other" for refused names) and result
	bytes    *prometheus.CounterVec // by file

	nRequests, nRefused, nBytes atomic.Int64
}

// TFTPStats are a TFTP server's counters since NewTFTP.
type TFTPStats struct {
	Requests int64 // read and write requests
	Refused  int64 // of those, refused (bad name, missing file, write)
	Bytes    int64 // file bytes sent in completed or partial transfers
}

// NewTFTP returns a server for the iPXE binaries in dir (DefaultIPXEDir
// when empty). It does not check dir: a missing file is a "file not
// found" to the client and a warning in the log.
func NewTFTP(dir string, logger *slog.Logger) *TFTP {
	if dir == "" {
		dir = DefaultIPXEDir
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &TFTP{
		dir:    dir,
		logger: logger.With("component", "tftp"),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bty_tftp_requests_total",
			Help: "TFTP requests by file (\"other\" for refused names) and result (ok, refused, not_found, aborted, failed).",
		}, []string{"file", "result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bty_tftp_bytes_sent_total",
			Help: "Bytes of iPXE binaries sent over TFTP, by file.",
		}, []string{"file"}),
	}
}

// Register adds the server's metrics (bty_tftp_requests_total,
// bty_tftp_bytes_sent_total) to reg.
func (t *TFTP) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{t.requests, t.bytes} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("registering TFTP metrics: %w", err)
		}
	}
	return nil
}

// Stats returns the counters so far.
func (t *TFTP) Stats() TFTPStats {
	return TFTPStats{Requests: t.nRequests.Load(), Refused: t.nRefused.Load(), Bytes: t.nBytes.Load()}
}

// Dir is the directory the server serves from.
func (t *TFTP) Dir() string { return t.dir }

// ListenAndServe listens on the UDP address addr (":69" for the standard
// port, which needs root or CAP_NET_BIND_SERVICE) and serves until ctx is
// done. A listen failure is returned at once.
func (t *TFTP) ListenAndServe(ctx context.Context, addr string) error {
	conn, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("TFTP: listening on udp %s: %w (port 69 needs root or CAP_NET_BIND_SERVICE; BTY_TFTP_PORT=0 turns TFTP off)", addr, err)
	}
	return t.Serve(ctx, conn)
}

// Serve serves on conn until ctx is done, then stops taking requests,
// lets transfers in flight finish (or time out) and returns nil. It
// closes conn.
func (t *TFTP) Serve(ctx context.Context, conn net.PacketConn) error {
	srv := tftp.NewServer(t.read, t.write)
	srv.SetTimeout(3 * time.Second)
	srv.SetRetries(5)
	// iPXE and UEFI firmware ask for large blocks; the library clamps
	// this to what the client asks and the interface's MTU allows.
	srv.SetBlockSize(1468)
	t.logger.Info("serving iPXE binaries over TFTP", "addr", conn.LocalAddr().String(), "dir", t.dir)
	// srv.Serve runs on this goroutine: pin/tftp opens a socket per
	// transfer from it, and a caller that runs Serve on a thread in
	// another network namespace wants those sockets there too.
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-ctx.Done():
			srv.Shutdown() // returns once transfers in flight end
		case <-stop:
		}
	}()
	err := srv.Serve(conn)
	close(stop)
	<-stopped
	conn.Close()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("TFTP on %s: %w", conn.LocalAddr(), err)
	}
	return nil
}

// allowed reports whether name is one of IPXEFiles.
func allowed(name string) bool {
	for _, f := range IPXEFiles {
		if name == f {
			return true
		}
	}
	return false
}

func (t *TFTP) read(name string, rf io.ReaderFrom) error {
	t.nRequests.Add(1)
	peer := ""
	if ot, ok := rf.(tftp.OutgoingTransfer); ok {
		a := ot.RemoteAddr()
		peer = a.String()
	}
	log := t.logger.With("file", name, "peer", peer)
	if strings.ContainsAny(name, "/\\\x00") || strings.Contains(name, "..") || !allowed(name) {
		t.refuse("other", "refused")
		log.Warn("TFTP read refused: only iPXE binaries are served", "allowed", IPXEFiles)
		return fmt.Errorf("file not found: only %s are served", strings.Join(IPXEFiles, ", "))
	}
	f, err := os.Open(filepath.Join(t.dir, name))
	if err == nil {
		var st os.FileInfo
		if st, err = f.Stat(); err == nil && !st.Mode().IsRegular() {
			err = fmt.Errorf("%s is not a regular file", f.Name())
		}
		if err != nil {
			f.Close()
		}
	}
	if err != nil {
		t.refuse(name, "not_found")
		if errors.Is(err, fs.ErrNotExist) {
			log.Warn("TFTP read of a missing iPXE binary: install Debian's ipxe package or set BTY_IPXE_DIR", "dir", t.dir)
		} else {
			log.Warn("TFTP read failed", "err", err)
		}
		return errors.New("file not found")
	}
	defer f.Close()
	start := time.Now()
	n, err := rf.ReadFrom(f)
	t.nBytes.Add(n)
	t.bytes.WithLabelValues(name).Add(float64(n))
	if err != nil && n == 0 && strings.Contains(err.Error(), "code=8") {
		// UEFI firmware asks for the size (tsize) first and ends that
		// transfer with error 8 before any data.
		t.requests.WithLabelValues(name, "aborted").Inc()
		log.Debug("TFTP transfer ended by the client before data (a size query)", "err", err)
		return nil
	}
	if err != nil {
		t.requests.WithLabelValues(name, "failed").Inc()
		log.Warn("TFTP transfer failed", "bytes", n, "err", err)
		// The transfer is over; an error here would make the library
		// send an error packet to a client that has gone.
		return nil
	}
	t.requests.WithLabelValues(name, "ok").Inc()
	log.Info("TFTP sent", "bytes", n, "duration", time.Since(start).Round(time.Millisecond))
	return nil
}

func (t *TFTP) write(name string, _ io.WriterTo) error {
	t.nRequests.Add(1)
	t.refuse("other", "refused")
	t.logger.Warn("TFTP write refused: the server is read-only", "file", name)
	return errors.New("access violation: this TFTP server is read-only")
}

func (t *TFTP) refuse(file, result string) {
	t.nRefused.Add(1)
	t.requests.WithLabelValues(file, result).Inc()
}
