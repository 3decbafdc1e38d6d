package live

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/btyproject/bty/internal/client"
	"github.com/btyproject/bty/internal/event"
	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/provision"
)

const (
	// reportEvery is how often a flash's progress goes to the server:
	// the machine's page shows it, a few figures a minute are plenty.
	reportEvery = 10 * time.Second
	// reportTimeout bounds one progress call: a late figure is worth
	// nothing, the next one replaces it.
	reportTimeout = 5 * time.Second
)

// progressReporter sends a flash's progress to the server (POST
// /pxe/{mac}/progress): once as soon as the first bytes are written (the
// server records the image fetch), then at most every reportEvery. It
// is an event.Sink that never blocks the flash: Emit only stores the
// latest figures and wakes one background sender, so a slow or hung
// server costs stale figures, never write speed. A 403 (the cycle is
// over, or the server refuses the token) stops the reports.
type progressReporter struct {
	send    func(context.Context, fleet.Progress) error
	image   string
	size    int64 // bty.image_size, for a stream whose header does not say
	every   time.Duration
	timeout time.Duration
	now     func() time.Time
	log     *slog.Logger

	mu      sync.Mutex
	latest  fleet.Progress
	pending bool
	last    time.Time // when a report was last queued; zero: none yet
	stopped bool

	wake   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

// newProgressReporter starts a reporter whose send posts to the server;
// Close stops it.
func newProgressReporter(ctx context.Context, send func(context.Context, fleet.Progress) error, image string, size int64, log *slog.Logger) *progressReporter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &progressReporter{send: send, image: image, size: size, every: reportEvery, timeout: reportTimeout,
		now: time.Now, log: log, wake: make(chan struct{}, 1), done: make(chan struct{})}
	ctx, r.cancel = context.WithCancel(ctx)
	go r.run(ctx)
	return r
}

// clientReporter reports through c for the machine's flash cycle.
func clientReporter(ctx context.Context, c *client.Client, mac fleet.MAC, cycle, image string, size int64, log *slog.Logger) *progressReporter {
	return newProgressReporter(ctx, func(ctx context.Context, p fleet.Progress) error {
		return c.PXEProgress(ctx, mac, cycle, p)
	}, image, size, log)
}

// Emit takes the engine's progress events; it never waits.
func (r *progressReporter) Emit(e event.Event) {
	if e.Event != event.Progress || e.BytesWritten <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	now := r.now()
	if !r.last.IsZero() && now.Sub(r.last) < r.every {
		return
	}
	total := e.TotalBytes
	if total <= 0 {
		total = r.size
	}
	r.latest = fleet.Progress{Image: r.image, BytesWritten: e.BytesWritten, TotalBytes: total, Rate: e.Rate}
	r.pending, r.last = true, now
	select {
	case r.wake <- struct{}{}:
	default: // the sender is awake already and takes the latest
	}
}

// run sends the latest figures whenever Emit queued some.
func (r *progressReporter) run(ctx context.Context) {
	defer close(r.done)
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		}
		r.mu.Lock()
		p, ok := r.latest, r.pending
		r.pending = false
		r.mu.Unlock()
		if !ok {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, r.timeout)
		err := r.send(cctx, p)
		cancel()
		switch {
		case err == nil:
		case client.IsForbidden(err):
			r.mu.Lock()
			r.stopped = true
			r.mu.Unlock()
			r.log.Info("the server refused a progress report; no more progress reports", "err", err)
			return
		default:
			r.log.Debug("progress report", "err", err)
		}
	}
}

// Close stops the reporter, abandoning a report in flight (the done
// report that follows carries the totals).
func (r *progressReporter) Close() {
	r.cancel()
	<-r.done
}

// imageName is the image's name for the server's flash history: the
// last element of the image URL's path, unescaped ("" when it has none).
func imageName(imageURL string) string {
	u, err := url.Parse(imageURL)
	if err != nil {
		return ""
	}
	p := strings.TrimRight(u.EscapedPath(), "/")
	name, err := url.PathUnescape(p[strings.LastIndexByte(p, '/')+1:])
	if err != nil {
		return ""
	}
	return name
}

// phoneHomeTries is how often cloud-init's phone_home tries the ready
// URL (it waits a few seconds between tries): the server may be
// restarting while the machine boots.
const phoneHomeTries = 30

// vendorData is the cloud-init vendor-data bty's live env seeds for the
// flash p describes, nil when there is nothing to seed. It is
// vendor-data, not user-data, so the user's own seed stays as it is and
// wins where both set something. Its parts:
//
//   - phone_home (p.PhoneHome) makes the flashed OS report ready: it
//     POSTs its instance id and hostname to the server's ready route
//     (docs/reference.md), the cycle's token in the query since
//     phone_home cannot set headers;
//   - ssh_authorized_keys (p.SSHKey, cijoe-online) authorises bty-web's
//     key for the image's default user, for bty-web's workflow runs.
//
// Values are JSON strings, which YAML reads as double-quoted scalars;
// the document is checked as the engine checks it
// (provision.CheckVendorData).
func vendorData(p Params) ([]byte, error) {
	if !p.PhoneHome && p.SSHKey == "" {
		return nil, nil
	}
	var b bytes.Buffer
	b.WriteString("#cloud-config\n")
	if p.PhoneHome {
		base, err := client.NormalizeServer(p.Server)
		if err != nil {
			return nil, err
		}
		if !fleet.ValidCycleToken(p.Cycle) {
			return nil, fmt.Errorf("phone_home needs the flash cycle's token, got %q: boot through bty-web's iPXE script", p.Cycle)
		}
		u := base + "/pxe/" + url.PathEscape(p.MAC.String()) + "/ready?cycle=" + url.QueryEscape(p.Cycle)
		quoted, err := json.Marshal(u)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "# Written by bty's live env: the flashed OS tells bty-web it is up.\n"+
			"phone_home:\n  url: %s\n  post: [instance_id, hostname]\n  tries: %d\n", quoted, phoneHomeTries)
	}
	if p.SSHKey != "" {
		quoted, err := json.Marshal(p.SSHKey)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "# Written by bty's live env: bty-web logs in with this key to run the machine's workflow.\n"+
			"ssh_authorized_keys:\n  - %s\n", quoted)
	}
	if err := provision.CheckVendorData(b.Bytes()); err != nil {
		return nil, fmt.Errorf("bty's vendor-data: %w", err)
	}
	return b.Bytes(), nil
}

// userDataSetsKeys reports whether user-data is a #cloud-config document
// with a top-level ssh_authorized_keys: cloud-init then drops
// vendor-data's list (user-data wins key by key), bty-web's key with it.
func userDataSetsKeys(userData []byte) bool {
	first, _, _ := bytes.Cut(userData, []byte("\n"))
	if string(bytes.TrimRight(first, "\r \t")) != "#cloud-config" {
		return false
	}
	var doc map[string]any
	if yaml.UnmarshalWithOptions(userData, &doc, yaml.AllowDuplicateMapKey()) != nil {
		return false
	}
	_, ok := doc["ssh_authorized_keys"]
	return ok
}
