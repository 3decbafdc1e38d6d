package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/btyproject/bty/internal/fleet"
)

// cijoe-online runs (docs/reference.md, "cijoe-online"): when a flash in
// that mode is ready, bty-web runs the machine's workflow with cijoe
// against the booted OS over SSH, with its own key. Each run has a
// directory $BTY_STATE_DIR/runs/ID holding the workflow as it ran
// (workflow.yaml), cijoe's config (config.toml), the log (log: cijoe's
// output and bty-web's own lines) and cijoe's output (cijoe-output/,
// its report.html among it). At most max_runs run at once; the rest
// queue.

// The runner's bounds.
const (
	// defaultMaxRuns is max_runs when neither the setting nor
	// BTY_MAX_RUNS says otherwise; maxMaxRuns its upper bound.
	defaultMaxRuns = 4
	maxMaxRuns     = 64
	// maxRunLog caps a run's log; the rest is dropped with a note.
	maxRunLog = 16 << 20
	// keepRunDirs is how many run directories a machine keeps whole;
	// older ones are emptied (their records stay), except its
	// baseline's.
	keepRunDirs = 50
	// sshWaitMax bounds the wait for the machine to accept bty-web's
	// key before cijoe starts (within the run's timeout).
	sshWaitMax = 5 * time.Minute
	// killGrace is how long cijoe has to stop after SIGTERM.
	killGrace = 10 * time.Second
)

// SettingMaxRuns is the settings key of max_runs.
const SettingMaxRuns = "max_runs"

// errRunCancelled is the cause of a run an operator cancelled;
// errRunSuperseded of one a new flash of its machine stopped.
var (
	errRunCancelled  = errors.New("cancelled by an operator")
	errRunSuperseded = errors.New("the machine is being reflashed")
)

// runner queues and runs workflow runs.
type runner struct {
	s   *Server
	dir string

	mu      sync.Mutex
	base    context.Context
	queue   []int64
	running map[int64]context.CancelCauseFunc
	wg      sync.WaitGroup
	// sshWait bounds the SSH preflight; timeout is a machine's run
	// timeout (tests shorten both).
	sshWait time.Duration
	timeout func(fleet.Machine) time.Duration
}

func newRunner(s *Server) *runner {
	return &runner{s: s, dir: filepath.Join(s.cfg.StateDir, "runs"), base: context.Background(),
		running: map[int64]context.CancelCauseFunc{}, sshWait: sshWaitMax, timeout: fleet.Machine.WorkflowTimeout}
}

// runDir is run id's directory.
func (rn *runner) runDir(id int64) string { return filepath.Join(rn.dir, strconv.FormatInt(id, 10)) }

// maxRuns is the runs allowed at once: the setting, else BTY_MAX_RUNS,
// else defaultMaxRuns.
func (s *Server) maxRuns(ctx context.Context) int {
	if v, err := s.store.Setting(ctx, SettingMaxRuns); err == nil {
		if n, err := strconv.Atoi(v); err == nil && n >= 1 && n <= maxMaxRuns {
			return n
		}
	}
	if s.cfg.MaxRuns >= 1 {
		return min(s.cfg.MaxRuns, maxMaxRuns)
	}
	return defaultMaxRuns
}

// cijoePath is where the cijoe program is ("" and an error saying what
// to do when it is not there).
func (s *Server) cijoePath() (string, error) {
	prog := s.cfg.Cijoe
	if prog == "" {
		prog = "cijoe"
	}
	p, err := exec.LookPath(prog)
	if err != nil {
		return "", fmt.Errorf("cijoe is not on bty-web's PATH (%s): install it where bty-web runs (pipx install cijoe) or point BTY_CIJOE at it", prog)
	}
	return p, nil
}

// start marks the runs a previous bty-web left queued or running as
// interrupted, then runs new ones under ctx until it ends.
func (rn *runner) start(ctx context.Context) {
	rn.mu.Lock()
	rn.base = ctx
	rn.mu.Unlock()
	left, err := rn.s.store.UnfinishedRuns(ctx)
	if err != nil {
		rn.s.log.Error("reading unfinished workflow runs", "err", err)
	}
	for _, r := range left {
		r = r.End(fleet.RunInterrupted, "bty-web stopped while the run was "+string(r.Result)+": reflash to run it again", nil, time.Now())
		rn.appendLog(r.ID, "[bty-web] "+r.Reason+"\n")
		rn.save(r)
	}
}

// wait waits (at most d) for the runs to record their end after the
// runner's context ended.
func (rn *runner) wait(d time.Duration) {
	done := make(chan struct{})
	go func() { rn.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

// save writes r and the machine's record, publishing the record.
func (rn *runner) save(r fleet.Run) (fleet.Run, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	now := time.Now()
	var seedUD, seedMD string
	if r.KnownGood {
		seedUD, seedMD = rn.baselineSeed(ctx, r)
	}
	dir := rn.runDir(r.ID)
	out, m, err := rn.s.store.SaveRun(ctx, r, func(m fleet.Machine, r fleet.Run) fleet.Machine {
		if r.ID != 0 {
			dir = rn.runDir(r.ID)
		}
		return m.WithRun(r, dir, seedUD, seedMD, now)
	})
	if err != nil {
		rn.s.log.Error("saving workflow run", "mac", r.MAC, "run", r.ID, "err", err)
		return r, err
	}
	rn.s.publishMachine(m)
	if out.Result.Ended() {
		rn.s.wake.notify()
	}
	return out, nil
}

// baselineSeed is the seed a successful run's flash was made with, for
// the baseline ("" for a half whose content is no longer known: the
// record's seed changed since the flash).
func (rn *runner) baselineSeed(ctx context.Context, r fleet.Run) (ud, md string) {
	m, err := rn.s.store.GetMachine(ctx, r.MAC)
	if err != nil {
		return "", ""
	}
	if f, err := rn.s.store.GetFlash(ctx, r.FlashID); err == nil {
		m = m.FlashedWith(&f)
	}
	if fleet.SeedHash(m.UserData) == r.UserDataSHA256 {
		ud = m.UserData
	}
	if fleet.SeedHash(m.MetaData) == r.MetaDataSHA256 {
		md = m.MetaData
	}
	return ud, md
}

// afterFlash starts the run of a machine whose cijoe-online flash just
// became ready.
func (rn *runner) afterFlash(m fleet.Machine) {
	f := m.Flash
	if f == nil || f.Result != fleet.FlashReady || f.Provisioning != fleet.ModeCijoeOnline {
		return
	}
	mf := m.FlashedWith(f)
	now := time.Now().UTC()
	r := fleet.Run{MAC: m.MAC, Source: fleet.RunOnline, FlashID: f.ID, Workflow: mf.CijoeWorkflowRef,
		Image: f.Image, ImageSHA256: f.ImageSHA256, UserDataSHA256: f.UserDataSHA256, MetaDataSHA256: f.MetaDataSHA256,
		Result: fleet.RunQueued, CreatedAt: now, User: m.SSHUser(f)}
	host := f.OSAddress
	if host == "" {
		host = m.LastSeenIP
	}
	if host != "" {
		r.Address = net.JoinHostPort(host, strconv.Itoa(m.SSHPort()))
	}
	var wf []byte
	var werr error
	if f.KnownGoodRun != 0 {
		wf, werr = os.ReadFile(filepath.Join(rn.runDir(f.KnownGoodRun), "workflow.yaml"))
		if werr != nil {
			werr = fmt.Errorf("the known-good run %d's workflow is gone (%v)", f.KnownGoodRun, werr)
		}
	} else {
		wf, werr = rn.s.workflows.read(r.Workflow)
	}
	if werr == nil {
		r.WorkflowSHA256 = fleet.SHA256Hex(wf)
	}
	r, err := rn.save(r)
	if err != nil {
		return
	}
	dir := rn.runDir(r.ID)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		werr = fmt.Errorf("making the run's directory: %w", err)
	} else if werr == nil {
		werr = os.WriteFile(filepath.Join(dir, "workflow.yaml"), wf, 0o640)
	}
	switch {
	case werr != nil:
		rn.fail(r, "cannot run the workflow: "+werr.Error())
		return
	case r.Address == "":
		rn.fail(r, "the machine's OS address is unknown (no ready check answered from it, no PXE contact seen)")
		return
	}
	rn.s.log.Info("workflow run queued", "mac", r.MAC, "run", r.ID, "workflow", r.Workflow, "flash", f.ID)
	rn.appendLog(r.ID, fmt.Sprintf("[bty-web] %s run %d of %s queued after flash %d (workflow %s, sha256 %s)\n",
		now.Format(time.RFC3339), r.ID, r.MAC, f.ID, r.Workflow, r.WorkflowSHA256))
	rn.mu.Lock()
	rn.queue = append(rn.queue, r.ID)
	rn.mu.Unlock()
	rn.kick()
}

// fail ends a run that could not start.
func (rn *runner) fail(r fleet.Run, reason string) {
	rn.s.log.Warn("workflow run failed", "mac", r.MAC, "run", r.ID, "reason", reason)
	rn.appendLog(r.ID, "[bty-web] run failed: "+reason+"\n")
	rn.save(r.End(fleet.RunFailed, reason, nil, time.Now()))
}

// kick starts queued runs while slots are free.
func (rn *runner) kick() {
	limit := rn.s.maxRuns(context.Background())
	rn.mu.Lock()
	defer rn.mu.Unlock()
	for len(rn.queue) > 0 && len(rn.running) < limit && rn.base.Err() == nil {
		id := rn.queue[0]
		rn.queue = rn.queue[1:]
		ctx, cancel := context.WithCancelCause(rn.base)
		rn.running[id] = cancel
		rn.wg.Add(1)
		go func() {
			defer rn.wg.Done()
			rn.execute(ctx, id)
			cancel(nil)
			rn.mu.Lock()
			delete(rn.running, id)
			rn.mu.Unlock()
			rn.kick()
		}()
	}
}

// cancel cancels run id: a queued run ends at once, a running one when
// its cijoe has stopped. It reports whether the run was running here.
func (rn *runner) cancel(id int64) bool { return rn.stop(id, errRunCancelled) }

// supersede stops the unfinished runs of a machine a new flash is about
// to overwrite.
func (rn *runner) supersede(mac fleet.MAC, flash int64) {
	runs, err := rn.s.store.UnfinishedRuns(context.Background())
	if err != nil {
		return
	}
	for _, r := range runs {
		if r.MAC != mac {
			continue
		}
		if !rn.stop(r.ID, errRunSuperseded) {
			reason := fmt.Sprintf("the machine is being reflashed (flash %d) before the run started", flash)
			rn.appendLog(r.ID, "[bty-web] "+reason+"\n")
			rn.save(r.End(fleet.RunCancelled, reason, nil, time.Now()))
		}
	}
}

// stop cancels run id with cause; see cancel.
func (rn *runner) stop(id int64, cause error) bool {
	rn.mu.Lock()
	if c, ok := rn.running[id]; ok {
		rn.mu.Unlock()
		c(cause)
		return true
	}
	for i, q := range rn.queue {
		if q == id {
			rn.queue = append(rn.queue[:i:i], rn.queue[i+1:]...)
			rn.mu.Unlock()
			return false
		}
	}
	rn.mu.Unlock()
	return false
}

// execute runs one queued run to its end.
func (rn *runner) execute(ctx context.Context, id int64) {
	r, err := rn.s.store.GetRun(context.Background(), id)
	if err != nil || r.Result != fleet.RunQueued {
		return
	}
	m, err := rn.s.store.GetMachine(context.Background(), r.MAC)
	if err != nil {
		rn.fail(r, "the machine's record is gone")
		return
	}
	timeout := rn.timeout(m)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	now := time.Now().UTC()
	r.Result, r.StartedAt = fleet.RunRunning, &now
	if r, err = rn.save(r); err != nil {
		return
	}
	logf := func(format string, args ...any) {
		rn.appendLog(id, "[bty-web] "+fmt.Sprintf(format, args...)+"\n")
	}
	end := func(res fleet.RunResult, reason string, exit *int) {
		r = r.End(res, reason, exit, time.Now())
		if _, err := os.Stat(filepath.Join(rn.runDir(id), "cijoe-output", "report.html")); err == nil {
			r.Report = true
		}
		r.KnownGood = res == fleet.RunSuccess && r.Source == fleet.RunOnline
		logf("run %s%s", res, map[bool]string{true: ": " + reason, false: ""}[reason != ""])
		if r.KnownGood {
			logf("recorded as the known-good baseline of %s", r.MAC)
		}
		rn.save(r)
		rn.s.log.Info("workflow run ended", "mac", r.MAC, "run", id, "result", res, "reason", reason,
			"took", time.Since(now).Round(time.Second))
		rn.prune(r.MAC)
	}
	// interrupted: ctx ended for a reason of its own (cancel, timeout,
	// bty-web stopping); it says how the run ends.
	interrupted := func() (fleet.RunResult, string) {
		switch {
		case errors.Is(context.Cause(ctx), errRunCancelled):
			return fleet.RunCancelled, "cancelled by an operator"
		case errors.Is(context.Cause(ctx), errRunSuperseded):
			return fleet.RunCancelled, "the machine is being reflashed: the run was stopped"
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			return fleet.RunTimeout, fmt.Sprintf("the run took longer than its timeout of %v (the machine's cijoe_timeout)", timeout)
		}
		return fleet.RunInterrupted, "bty-web stopped while the run was running: reflash to run it again"
	}
	cijoe, err := rn.s.cijoePath()
	if err != nil {
		end(fleet.RunFailed, err.Error(), nil)
		return
	}
	signer, _, err := rn.s.sshKey.load()
	if err != nil {
		end(fleet.RunFailed, err.Error(), nil)
		return
	}
	logf("cijoe is %s; timeout %v; connecting to %s as %s with bty-web's key", cijoe, timeout, r.Address, r.User)
	if err := rn.waitSSH(ctx, r, signer, logf); err != nil {
		if ctx.Err() != nil {
			end2, why := interrupted()
			end(end2, why, nil)
			return
		}
		end(fleet.RunFailed, err.Error(), nil)
		return
	}
	dir := rn.runDir(id)
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(rn.cijoeConfig(r)), 0o640); err != nil {
		end(fleet.RunFailed, "writing cijoe's config: "+err.Error(), nil)
		return
	}
	logf("running: cijoe workflow.yaml --config config.toml --monitor (in %s)", dir)
	lw := rn.logWriter(id)
	defer lw.Close()
	cmd := exec.Command(cijoe, "workflow.yaml", "--config", "config.toml", "--monitor")
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, lw, lw
	cmd.Env = append(os.Environ(), "BTY_MAC="+r.MAC.String(), "BTY_RUN_ID="+strconv.FormatInt(id, 10),
		"BTY_SERVER_RUN_DIR="+dir)
	err = runGroup(ctx, cmd, killGrace)
	if ctx.Err() != nil {
		res, why := interrupted()
		end(res, why, exitCode(cmd))
		return
	}
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			end(fleet.RunFailed, fmt.Sprintf("cijoe exited %d: the log shows the failing step", ee.ExitCode()), exitCode(cmd))
			return
		}
		end(fleet.RunFailed, "running cijoe: "+err.Error(), nil)
		return
	}
	end(fleet.RunSuccess, "", exitCode(cmd))
}

// exitCode is cmd's exit status (nil when it did not exit by itself).
func exitCode(cmd *exec.Cmd) *int {
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() < 0 {
		return nil
	}
	c := cmd.ProcessState.ExitCode()
	return &c
}

// waitSSH waits until r's machine accepts an SSH login with bty-web's
// key (at most rn.sshWait), logging the attempts.
func (rn *runner) waitSSH(ctx context.Context, r fleet.Run, signer ssh.Signer, logf func(string, ...any)) error {
	deadline := time.Now().Add(rn.sshWait)
	var last error
	for try := 1; ; try++ {
		last = sshLogin(ctx, r.Address, r.User, signer)
		if last == nil {
			logf("SSH login as %s on %s works", r.User, r.Address)
			return nil
		}
		if try == 1 || try%6 == 0 {
			logf("SSH to %s as %s: %v (retrying until %s)", r.Address, r.User, last, deadline.Format(time.TimeOnly))
		}
		if time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Second):
		}
	}
	hint := "is the machine up and sshd listening?"
	if strings.Contains(last.Error(), "unable to authenticate") {
		hint = "the machine does not accept bty-web's key for " + r.User + ": in cloud-init images bty seeds it for the default user (set cijoe_ssh_user if the login differs); other images must carry it (GET /settings: ssh_public_key)"
	}
	return fmt.Errorf("SSH to %s as %s failed for %v: %v; %s", r.Address, r.User, rn.sshWait, last, hint)
}

// sshLogin logs in once and closes the session. Host keys are not
// checked: a reflashed machine has a new one each time.
func sshLogin(ctx context.Context, addr, user string, signer ssh.Signer) error {
	d := net.Dialer{Timeout: 10 * time.Second}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	cc, chans, reqs, err := ssh.NewClientConn(conn, addr, &ssh.ClientConfig{User: user,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: ssh.InsecureIgnoreHostKey(), //nolint:gosec // reflashed machines change host keys
		Timeout: 10 * time.Second})
	if err != nil {
		return err
	}
	ssh.NewClient(cc, chans, reqs).Close()
	return nil
}

// cijoeConfig is run r's cijoe config: an SSH transport to its machine
// with bty-web's key (the keys of cijoe's [cijoe.transport.ssh], which
// are paramiko's connect() arguments).
func (rn *runner) cijoeConfig(r fleet.Run) string {
	host, port, _ := net.SplitHostPort(r.Address)
	return fmt.Sprintf(`# Written by bty-web for workflow run %d of %s (docs/reference.md, "cijoe-online").
[cijoe.workflow]
fail_fast = true

[cijoe.transport.ssh]
hostname = %s
port = %s
username = %s
key_filename = %s
`, r.ID, r.MAC, tomlString(host), port, tomlString(r.User), tomlString(rn.s.sshKey.keyPath()))
}

// tomlString is s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteRune(c)
		case c < 0x20 || c == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, c)
		default:
			b.WriteRune(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// appendLog appends bty-web's own line to run id's log (best effort).
func (rn *runner) appendLog(id int64, s string) {
	w := rn.logWriter(id)
	_, _ = io.WriteString(w, s)
	w.Close()
}

// logWriter appends to run id's log up to maxRunLog bytes.
func (rn *runner) logWriter(id int64) *cappedLog {
	dir := rn.runDir(id)
	_ = os.MkdirAll(dir, 0o750)
	f, err := os.OpenFile(filepath.Join(dir, "log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	c := &cappedLog{f: f}
	if err == nil {
		if fi, err := f.Stat(); err == nil {
			c.n = fi.Size()
		}
	}
	return c
}

// cappedLog is a log file that stops growing at maxRunLog bytes.
type cappedLog struct {
	mu  sync.Mutex
	f   *os.File
	n   int64
	cut bool
}

func (c *cappedLog) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f == nil || c.cut {
		return len(p), nil
	}
	if room := maxRunLog - c.n; int64(len(p)) > room {
		_, _ = c.f.Write(p[:max(room, 0)])
		_, _ = fmt.Fprintf(c.f, "\n[bty-web] the log reached %d MiB: the rest of cijoe's output is not kept\n", maxRunLog>>20)
		c.cut = true
		return len(p), nil
	}
	n, err := c.f.Write(p)
	c.n += int64(n)
	if err != nil {
		return len(p), nil // a full disk must not stop cijoe
	}
	return n, nil
}

func (c *cappedLog) Close() error {
	if c.f == nil {
		return nil
	}
	return c.f.Close()
}

// prune removes the directories of a machine's runs older than its
// keepRunDirs newest, keeping its baseline's (a reflash to known-good
// reruns that workflow copy).
func (rn *runner) prune(mac fleet.MAC) {
	ctx := context.Background()
	runs, _, err := rn.s.store.ListRuns(ctx, mac, 0, keepRunDirs)
	if err != nil || len(runs) == 0 {
		return
	}
	keep := int64(0)
	if m, err := rn.s.store.GetMachine(ctx, mac); err == nil && m.LastKnownGood != nil {
		keep = m.LastKnownGood.RunID
	}
	for _, r := range runs {
		dir := rn.runDir(r.ID)
		if r.ID == keep || r.Running() {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, prunedMark)); err == nil {
			continue
		}
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			_ = os.RemoveAll(filepath.Join(dir, e.Name()))
		}
		_ = os.WriteFile(filepath.Join(dir, prunedMark), nil, 0o640)
	}
}

// prunedMark marks a run directory whose files were pruned.
const prunedMark = "pruned"

// removeAll removes the directories of runs (a deleted machine's).
func (rn *runner) removeAll(runs []fleet.Run) {
	for _, r := range runs {
		rn.cancel(r.ID)
		_ = os.RemoveAll(rn.runDir(r.ID))
	}
}
