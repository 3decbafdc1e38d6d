package flash

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/btyproject/bty/internal/disk"
	"github.com/btyproject/bty/internal/event"
	"github.com/btyproject/bty/internal/fault"
	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/human"
	"github.com/btyproject/bty/internal/provision"
	"github.com/btyproject/bty/internal/source"
)

// Run validates opts, then writes the image onto the target, syncs,
// re-reads the partition table and verifies when asked. Every step is
// reported to opts.Sink. The error carries its kind of failure
// (fault.KindOf): misuse, root required, tool missing, target raced, or
// failed.
func Run(ctx context.Context, opts Options) (*Result, error) {
	sink := opts.Sink
	if sink == nil {
		sink = event.Discard
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	start := time.Now()
	res := &Result{Image: opts.Image, Target: opts.Target, Provisioning: opts.Provision, Notes: []string{}}
	if res.Provisioning == "" {
		res.Provisioning = fleet.ModeNone
	}
	fail := func(err error) (*Result, error) {
		sink.Emit(event.Event{Event: event.Failed, Time: time.Now(), Note: err.Error(),
			BytesWritten: res.BytesWritten + res.BytesZeroed})
		res.Elapsed = time.Since(start).Seconds()
		return res, err
	}

	p := prepare(ctx, opts, false)
	defer p.close()
	res.Notes = append(res.Notes, p.plan.Notes...)
	if err := p.plan.Err(); err != nil {
		if fault.KindOf(err) != fault.Usage && os.Geteuid() != 0 {
			return fail(fault.New(fault.NeedRoot, "flashing needs root: run bty as root (sudo); the plan also reports: %v", err))
		}
		return fail(err)
	}
	if os.Geteuid() != 0 {
		return fail(fault.New(fault.NeedRoot, "flashing %s needs root: run bty as root (sudo)", p.disk.Path))
	}
	res.Target = p.disk.Path
	res.Format = string(p.img.Format())

	// Re-probe right before writing: the disk may have been mounted,
	// replaced or stacked on since it was checked.
	t, err := reprobeAndOpen(p.disk, !opts.Buffered)
	if err != nil {
		return fail(err)
	}
	defer func() {
		if t != nil {
			t.Close()
		}
	}()

	total := p.img.Size()
	sink.Emit(event.Event{Event: event.Started, Time: time.Now(), TotalBytes: max(total, 0)})
	sink.Emit(event.Event{Event: event.Writing, Time: time.Now(), Format: res.Format})
	log.Info("flashing", "image", opts.Image, "target", p.disk.Path, "format", res.Format, "size", total)

	copts := copyOptions{
		Workers: opts.Workers,
		Expect:  opts.SHA256,
		Hash:    opts.SHA256 != "" || opts.VerifyFull,
		Record:  opts.Verify,
		Sink:    sink,
	}
	var st *copyStats
	if opts.Delta {
		st, err = flashDelta(ctx, opts, p, t, copts, res, log)
		if err != nil {
			return fail(err)
		}
	}
	if st == nil {
		st, err = copyImage(ctx, p.img, t, copts)
		if p.src != nil && source.IsURL(opts.Image) {
			st.Fetched = p.src.Size()
		}
	}
	res.TotalBytes, res.BytesWritten, res.BytesZeroed = st.Total, st.Written, st.Zeroed
	res.ZeroMethod, res.SHA256 = string(st.ZeroMethod), st.SHA256
	res.Delta, res.BytesFetched, res.ChunksTotal, res.ChunksEqual = st.Delta, max(st.Fetched, 0), st.ChunksTotal, st.ChunksEqual
	res.ChunksZero = st.ChunksZero
	if err != nil {
		// Persist what was written (at least the zeroed head) before
		// reporting; the disk must not keep a stale bootable table.
		if serr := t.Sync(); serr != nil {
			log.Warn("sync after a failed flash", "err", serr)
		}
		var tl *TooLargeError
		if errors.As(err, &tl) {
			return fail(fault.Wrap(fault.Failed, err))
		}
		return fail(err)
	}
	if st.ZeroMethod == disk.ZeroWrite {
		res.Notes = append(res.Notes, fmt.Sprintf("%s cannot zero ranges by ioctl; zero ranges were written as zeros (slower)", p.disk.Path))
	}

	if err := t.Sync(); err != nil {
		return fail(fmt.Errorf("flushing %s: %w; the disk may be incomplete, flash it again", p.disk.Path, err))
	}
	sink.Emit(event.Event{Event: event.Synced, Time: time.Now()})

	// A failing re-read never fails the flash: the bytes are on the disk.
	note := ""
	if err := t.RereadPartitions(); err != nil {
		note = fmt.Sprintf("the kernel did not re-read the partition table of %s (%v); the image is written, reboot or replug to see its partitions", p.disk.Path, err)
	} else if st.PartitionTable != "" && len(disk.Partitions(p.disk.Name)) == 0 {
		note = fmt.Sprintf("the image has a %s partition table but the kernel created no partition nodes for %s "+
			"(a loop device without partition scanning, or a kernel without %s support); the partitions are on the disk",
			st.PartitionTable, p.disk.Path, st.PartitionTable)
	}
	if note != "" {
		res.Notes = append(res.Notes, note)
	}
	if st.PartitionTable == "gpt" && st.Total < p.disk.SizeBytes {
		res.Notes = append(res.Notes, fmt.Sprintf("the image's backup GPT header sits at its end (%s), not at the end of the %s disk; "+
			"tools like sgdisk -e can move it if the partitions are to grow", formatBytes(st.Total), formatBytes(p.disk.SizeBytes)))
	}
	sink.Emit(event.Event{Event: event.Partprobed, Time: time.Now(), Note: note})

	if opts.VerifyFull {
		if err := verifyFull(ctx, p.disk.Path, st.Total, st.SHA256); err != nil {
			return fail(err)
		}
		res.Verified = true
		sink.Emit(event.Event{Event: event.Verified, Time: time.Now(), SHA256: st.SHA256})
	} else if opts.Verify {
		if err := verify(ctx, p.disk.Path, st.Segments, opts.Workers); err != nil {
			return fail(err)
		}
		res.Verified = true
		sink.Emit(event.Event{Event: event.Verified, Time: time.Now(), SHA256: st.SHA256})
	}

	// The disk is released before provisioning: mounting its partitions
	// needs them unclaimed.
	err = t.Close()
	t = nil
	if err != nil {
		return fail(fault.Wrap(fault.Failed, err))
	}
	if res.Provisioning != fleet.ModeNone {
		pres, err := runProvisioning(ctx, opts, p, sink, log)
		res.Provision = pres
		if pres != nil {
			res.Notes = append(res.Notes, pres.Notes...)
		}
		if err != nil {
			return fail(fault.Wrap(fault.KindOf(err), fmt.Errorf("the image is written to %s, but provisioning (%s) failed: %w",
				p.disk.Path, res.Provisioning, err)))
		}
	}

	res.Elapsed = time.Since(start).Seconds()
	if res.Elapsed > 0 {
		res.Rate = float64(res.TotalBytes) / res.Elapsed
	}
	for _, n := range res.Notes {
		sink.Emit(event.Event{Event: event.Note, Time: time.Now(), Note: n})
	}
	done := event.Event{Event: event.Done, Time: time.Now(), BytesWritten: res.TotalBytes,
		TotalBytes: res.TotalBytes, Rate: res.Rate, Elapsed: res.Elapsed, SHA256: res.SHA256,
		BytesFetched: res.BytesFetched}
	if res.Delta {
		// A delta flash says what it really wrote, and its chunks.
		done.BytesWritten = res.BytesWritten
		done.ChunksTotal, done.ChunksZero, done.ChunksEqual = st.ChunksTotal, st.ChunksZero, st.ChunksEqual
		done.ChunksFetched, done.ChunksWritten = st.ChunksFetched, st.ChunksWritten
	}
	if res.Provision != nil {
		done.LogPath = res.Provision.LogPath
	}
	sink.Emit(done)
	return res, nil
}

// flashDelta runs a delta flash when the image's chunk store is usable:
// (nil, nil) with a note in res when it is not, or when it broke before
// anything but the zeroed head was at stake; the caller then flashes in
// full.
func flashDelta(ctx context.Context, opts Options, p *prepared, t *disk.Target, copts copyOptions, res *Result, log *slog.Logger) (*copyStats, error) {
	d, note, err := openDeltaStore(ctx, opts, p, t.Size())
	if err != nil {
		return nil, err
	}
	if d == nil {
		log.Info("delta flash not possible", "why", note)
		res.Notes = append(res.Notes, note)
		return nil, nil
	}
	defer d.close()
	// The image itself is not read: release its connection (a URL's
	// first GET is open since the plan) and reopen it only to fall back.
	p.close()
	st, err := deltaImage(ctx, d, t, copts)
	var sb *errStoreBroken
	if errors.As(err, &sb) {
		p.openImage(ctx, opts)
		if p.img == nil {
			return nil, fmt.Errorf("the chunk store %s broke during the delta flash (%v), and the image cannot be opened again for a full flash: %w",
				d.src.Name(), sb.err, p.plan.Err())
		}
		// The head is zeroed; nothing wrong was written (every chunk is
		// checked before it is). The full flash rewrites everything.
		note := fmt.Sprintf("the chunk store %s broke during the delta flash (%v): flashing in full", d.src.Name(), sb.err)
		log.Warn("delta flash fell back", "err", sb.err)
		res.Notes = append(res.Notes, note)
		return nil, nil
	}
	if err == nil {
		log.Info("delta flash", "chunks", st.ChunksTotal, "equal", st.ChunksEqual, "fetched_bytes", st.Fetched, "written_bytes", st.Written)
		res.Notes = append(res.Notes, deltaNote(st))
	}
	return st, err
}

// runProvisioning applies the provisioning mode to the flashed disk.
func runProvisioning(ctx context.Context, opts Options, p *prepared, sink event.Sink, log *slog.Logger) (*provision.Result, error) {
	sink.Emit(event.Event{Event: event.Provisioning, Time: time.Now(), Mode: string(p.plan.Provisioning)})
	abs := func(path string) string {
		if path == "" {
			return ""
		}
		if a, err := filepath.Abs(path); err == nil {
			return a
		}
		return path
	}
	return provision.Run(ctx, provision.Options{
		Mode:         p.plan.Provisioning,
		Target:       p.disk.Path,
		UserData:     p.userData,
		MetaData:     p.metaData,
		VendorData:   p.vendorData,
		SeedOptional: opts.SeedOptional,
		Hostname:     opts.Hostname,
		Workflow:     abs(opts.CijoeWorkflow),
		Config:       abs(opts.CijoeConfig),
		LogDir:       opts.LogDir,
		Sink:         sink,
		Logger:       log,
	})
}

// reprobeAndOpen checks the target once more and opens it exclusively.
// Any change since validation is fault.Raced.
func reprobeAndOpen(was disk.Disk, direct bool) (*disk.Target, error) {
	raced := func(format string, args ...any) error {
		return fault.New(fault.Raced, "target %s changed since it was checked: %s; check it and run bty again",
			was.Path, fmt.Sprintf(format, args...))
	}
	now, err := disk.Get(was.Path)
	if err != nil {
		return nil, raced("%v", err)
	}
	if now.Major != was.Major || now.Minor != was.Minor {
		return nil, raced("it is now device %d:%d, was %d:%d", now.Major, now.Minor, was.Major, was.Minor)
	}
	if now.SizeBytes != was.SizeBytes {
		return nil, raced("its size changed from %d to %d bytes", was.SizeBytes, now.SizeBytes)
	}
	if probs := now.Problems(); len(probs) > 0 {
		return nil, raced("%s", probs[0])
	}
	t, err := disk.OpenTarget(was.Path, direct)
	if err != nil && direct && !errors.Is(err, disk.ErrBusy) && !errors.Is(err, disk.ErrReadOnly) {
		// Some devices (and filesystems behind loop devices) refuse
		// O_DIRECT: write through the page cache instead.
		t, err = disk.OpenTarget(was.Path, false)
	}
	if err != nil {
		if errors.Is(err, disk.ErrBusy) {
			return nil, raced("%v", err)
		}
		return nil, fault.Wrap(fault.Failed, err)
	}
	return t, nil
}

func formatBytes(n int64) string { return human.BytesOr(n, "unknown size") }
