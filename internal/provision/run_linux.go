package provision

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/btyproject/bty/internal/disk"
	"github.com/btyproject/bty/internal/event"
	"github.com/btyproject/bty/internal/fault"
	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/layout"
)

// session holds one run's state and the undo stack every mount and loop
// device is pushed on.
type session struct {
	ctx  context.Context
	opts Options
	log  *slog.Logger
	sink event.Sink
	disk disk.Disk
	res  *Result
	undo []func() error
}

// Run provisions opts.Target according to opts.Mode. The error carries
// its kind (fault.KindOf): fault.Failed for a failed provisioning,
// fault.MissingTool when cijoe is missing. Whatever happens, nothing
// stays mounted or attached; a failure to undo is part of the returned
// error.
func Run(ctx context.Context, opts Options) (res *Result, err error) {
	s := &session{ctx: ctx, opts: opts, log: opts.Logger, sink: opts.Sink,
		res: &Result{Mode: opts.Mode, Notes: []string{}}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.sink == nil {
		s.sink = event.Discard
	}
	defer func() {
		if cerr := s.cleanup(); cerr != nil {
			err = errors.Join(err, fault.Wrap(fault.Failed, cerr))
		}
	}()
	s.disk, err = disk.Get(opts.Target)
	if err != nil {
		return s.res, fault.Wrap(fault.Failed, fmt.Errorf("provisioning %s: %w", opts.Target, err))
	}
	tbl, err := s.table()
	if err != nil {
		return s.res, fault.Wrap(fault.Failed, err)
	}
	switch opts.Mode {
	case fleet.ModeCloudInit:
		err = s.cloudInit(tbl)
	case fleet.ModeCijoe:
		err = s.cijoe(tbl)
	default:
		err = fault.New(fault.Usage, "unknown provisioning mode %q", opts.Mode)
	}
	return s.res, err
}

func (s *session) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.log.Info("provisioning", "mode", s.opts.Mode, "note", msg)
	s.sink.Emit(event.Event{Event: event.Provisioning, Time: time.Now(), Mode: string(s.opts.Mode), Note: msg})
}

// cleanup runs the undo stack, last first, and flushes what went
// through partitions to the whole disk.
func (s *session) cleanup() error {
	var errs []error
	for i := len(s.undo) - 1; i >= 0; i-- {
		if err := s.undo[i](); err != nil {
			errs = append(errs, err)
		}
	}
	s.undo = nil
	if s.disk.Path != "" {
		// Writes through a partition node bypass the whole disk's page
		// cache: flush it so later readers of the disk see them.
		if f, err := os.OpenFile(s.disk.Path, os.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
			_ = unix.IoctlSetInt(int(f.Fd()), unix.BLKFLSBUF, 0)
			f.Close()
		}
	}
	return errors.Join(errs...)
}

// table reads the target's partition table and probes each partition's
// filesystem. A disk with no table is one partition: the whole disk.
func (s *session) table() (*layout.Table, error) {
	f, err := os.OpenFile(s.disk.Path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s to read its partitions: %w", s.disk.Path, err)
	}
	defer f.Close()
	tbl, err := layout.ReadTable(f, s.disk.SizeBytes, s.disk.LogicalBlockSize)
	if errors.Is(err, layout.ErrNoTable) {
		tbl = &layout.Table{Scheme: "none", SectorSize: s.disk.LogicalBlockSize,
			Partitions: []layout.Partition{{Number: 0, Start: 0, Size: s.disk.SizeBytes}}}
	} else if err != nil {
		return nil, fmt.Errorf("reading the partition table of %s: %w", s.disk.Path, err)
	}
	for i := range tbl.Partitions {
		p := &tbl.Partitions[i]
		p.Filesystem = layout.Probe(f, p.Start, p.Size)
	}
	var parts []string
	for _, p := range tbl.Partitions {
		parts = append(parts, describe(p))
	}
	s.note("%s: %s partition table; %s", s.disk.Path, tbl.Scheme, strings.Join(parts, ", "))
	return tbl, nil
}

// mounted is a partition reached and mounted, with the directory that
// holds its root tree (a btrfs subvolume's, or the mount point itself).
type mounted struct {
	part layout.Partition
	vol  *volume
	m    *mount
	// sub is the subvolume path under the mount ("" for the top).
	sub string
}

func (mp *mounted) root() string { return filepath.Join(mp.m.Dir, mp.sub) }

// mount reaches partition p and mounts it with flags; the undo stack
// unmounts and detaches.
func (s *session) mount(p layout.Partition, flags uintptr, data string) (*mounted, error) {
	vol, err := openVolume(s.disk, p)
	if err != nil {
		return nil, fmt.Errorf("reaching %s of %s: %w", p.Name(), s.disk.Path, err)
	}
	s.undo = append(s.undo, vol.close)
	m, err := mountVolume(vol.Path, p.Filesystem, flags, data)
	if err != nil {
		return nil, err
	}
	s.undo = append(s.undo, m.unmount)
	s.log.Debug("mounted", "partition", p.Number, "via", vol.Via(), "dir", m.Dir, "rw", m.RW)
	return &mounted{part: p, vol: vol, m: m}, nil
}

// release undoes the last mount (and its loop device) early: probing
// mounts one partition at a time.
func (s *session) release() error {
	var errs []error
	for range 2 {
		n := len(s.undo)
		if n == 0 {
			break
		}
		errs = append(errs, s.undo[n-1]())
		s.undo = s.undo[:n-1]
	}
	return errors.Join(errs...)
}

// preferredSubvolumes are the names distributions give a btrfs root
// subvolume (Ubuntu, openSUSE: @; Fedora: root).
var preferredSubvolumes = []string{"@", "root", "@root", "@rootfs", "rootfs"}

// findRoot returns the directory under dir holding a root tree (one with
// etc/): dir itself or, for btrfs, a top-level subvolume.
func findRoot(dir, fs string) (string, bool) {
	if isDir(filepath.Join(dir, "etc")) {
		return "", true
	}
	if fs != layout.FSBtrfs {
		return "", false
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", false
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	sort.SliceStable(names, func(i, j int) bool {
		pi, pj := slices.Index(preferredSubvolumes, names[i]), slices.Index(preferredSubvolumes, names[j])
		if pi < 0 {
			pi = len(preferredSubvolumes)
		}
		if pj < 0 {
			pj = len(preferredSubvolumes)
		}
		return pi < pj
	})
	for _, n := range names {
		if isDir(filepath.Join(dir, n, "etc")) && isDir(filepath.Join(dir, n, "usr")) {
			return n, true
		}
	}
	return "", false
}

// isDir reports a real directory, not following a final symlink (an
// absolute link in the image would point into the host).
func isDir(path string) bool {
	st, err := os.Lstat(path)
	return err == nil && st.IsDir()
}
