package provision

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/btyproject/bty/internal/event"
	"github.com/btyproject/bty/internal/fault"
	"github.com/btyproject/bty/internal/layout"
)

// maxLine bounds one output line in an event (the log keeps it whole).
const maxLine = 4096

// cijoe mounts the largest partition read-write and runs
// `cijoe WORKFLOW --monitor [-c CONFIG]` with BTY_ROOTFS pointing at its
// root, streaming the output to events and a log file.
func (s *session) cijoe(tbl *layout.Table) error {
	bin, err := exec.LookPath("cijoe")
	if err != nil {
		return fault.New(fault.MissingTool, "cijoe is not on PATH: install it (pipx install cijoe) or choose another --provision mode")
	}
	largest := tbl.Largest()
	if largest == nil {
		return fmt.Errorf("%s has an empty partition table: nothing to run the workflow against", s.disk.Path)
	}
	p := *largest
	if why := unsupportedRoot(p.Filesystem); why != "" {
		return fmt.Errorf("the largest partition of %s, %s, is %s; the workflow was not run", s.disk.Path, p.Name(), why)
	}
	if mountType(p.Filesystem) == "" {
		return fmt.Errorf("the largest partition of %s, %s, holds no filesystem bty can mount; the workflow was not run", s.disk.Path, describe(p))
	}
	mp, err := s.mount(p, mountPlain, "")
	if err != nil {
		return fmt.Errorf("mounting the largest partition for the workflow: %w", err)
	}
	if sub, ok := findRoot(mp.m.Dir, p.Filesystem); ok && sub != "" {
		// A root in a btrfs subvolume is mounted on its own, so that
		// BTY_ROOTFS is a mount point like any other root.
		if err := s.release(); err != nil {
			return err
		}
		if mp, err = s.mount(p, mountPlain, "subvol="+sub); err != nil {
			return fmt.Errorf("mounting subvolume %s of the largest partition: %w", sub, err)
		}
		s.res.Subvolume = sub
	}
	s.res.Partition, s.res.Device, s.res.Filesystem = p.Number, mp.vol.Via(), p.Filesystem
	rootfs := mp.root()
	s.note("%s mounted read-write at %s via %s", describe(p), rootfs, mp.vol.Via())

	logf, err := s.openLog()
	if err != nil {
		return err
	}
	defer logf.Close()
	s.res.LogPath = logf.Name()

	args := []string{s.opts.Workflow, "--monitor"}
	if s.opts.Config != "" {
		args = append(args, "-c", s.opts.Config)
	}
	fmt.Fprintf(logf, "# bty %s: %s %s\n# BTY_ROOTFS=%s (%s of %s via %s)\n",
		time.Now().UTC().Format(time.RFC3339), bin, strings.Join(args, " "), rootfs, p.Name(), s.disk.Path, mp.vol.Via())
	s.note("running cijoe %s (log: %s)", strings.Join(args, " "), logf.Name())

	code, runErr := s.runCijoe(bin, args, rootfs, mp.vol.Path, logf)
	if runErr == nil && s.ctx.Err() == nil {
		s.res.CijoeExit = &code
	}
	fmt.Fprintf(logf, "# bty %s: cijoe exit status %d\n", time.Now().UTC().Format(time.RFC3339), code)
	if err := logf.Sync(); err != nil {
		return fmt.Errorf("writing the cijoe log %s: %w", logf.Name(), err)
	}
	switch {
	case s.ctx.Err() != nil:
		return fmt.Errorf("provisioning interrupted: cijoe was stopped; its output so far is in %s", logf.Name())
	case runErr != nil:
		return fmt.Errorf("running cijoe: %w; its output is in %s", runErr, logf.Name())
	case code != 0:
		return fmt.Errorf("cijoe %s exited with status %d; its output is in %s", filepath.Base(s.opts.Workflow), code, logf.Name())
	}
	s.note("cijoe finished successfully")
	return nil
}

// runCijoe runs cijoe in its own process group, copying its combined
// output line by line to the log and to output events. Cancelling the
// context sends SIGTERM to the group, then SIGKILL after 10 s. Leftover
// processes of the group are killed when cijoe exits: they would hold
// the filesystem busy.
func (s *session) runCijoe(bin string, args []string, rootfs, dev string, logf *os.File) (int, error) {
	cmd := exec.CommandContext(s.ctx, bin, args...)
	cmd.Env = append(os.Environ(), "BTY_ROOTFS="+rootfs, "BTY_TARGET="+s.disk.Path, "BTY_PARTITION="+dev)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	pr, pw, err := os.Pipe()
	if err != nil {
		return -1, err
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return -1, err
	}
	pw.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.copyOutput(pr, logf)
	}()
	werr := cmd.Wait()
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	pr.Close()
	<-done
	code := cmd.ProcessState.ExitCode()
	var ee *exec.ExitError
	if werr != nil && !errors.As(werr, &ee) && !errors.Is(werr, context.Canceled) && s.ctx.Err() == nil {
		return code, werr
	}
	return code, nil
}

func (s *session) copyOutput(r io.Reader, logf io.Writer) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			io.WriteString(logf, line)
			text := strings.TrimRight(line, "\r\n")
			if len(text) > maxLine {
				text = text[:maxLine] + "..."
			}
			s.sink.Emit(event.Event{Event: event.Output, Time: time.Now(), Mode: string(s.opts.Mode), Line: text})
		}
		if err != nil {
			return
		}
	}
}

// openLog creates the cijoe log in the log directory: LogDir, else
// $BTY_LOG_DIR, else /var/log/bty, else the temp dir.
func (s *session) openLog() (*os.File, error) {
	dirs := []string{s.opts.LogDir}
	if s.opts.LogDir == "" {
		dirs = []string{os.Getenv("BTY_LOG_DIR"), "/var/log/bty", os.TempDir()}
	}
	name := fmt.Sprintf("cijoe-%s-%s.log", s.disk.Name, time.Now().UTC().Format("20060102T150405Z"))
	var errs []error
	for _, d := range dirs {
		if d == "" {
			continue
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			errs = append(errs, err)
			continue
		}
		f, err := os.OpenFile(filepath.Join(d, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o640)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		return f, nil
	}
	return nil, fmt.Errorf("creating the cijoe log: %w; set BTY_LOG_DIR to a writable directory", errors.Join(errs...))
}
