// Package tui is bty-tui: pick an image, a target disk and a provisioning
// mode, confirm, watch the flash, see the result (README, "Terminal UI").
// It drives the same engine and event stream as `bty flash`.
package tui

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/progress"
	"github.com/charmbracelet/bubbles/spinner"
	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/btyproject/bty/internal/disk"
	"github.com/btyproject/bty/internal/event"
	"github.com/btyproject/bty/internal/flash"
	"github.com/btyproject/bty/internal/fleet"
)

// Config wires the model to the world. The func fields are the seams to
// the engine and the system; zero values use the real ones.
type Config struct {
	Catalog Catalog
	// MAC, with Done, reports a successful flash to the server.
	MAC  fleet.MAC
	Done func(ctx context.Context, mac fleet.MAC, totals fleet.Progress) error
	// UploadRun, with MAC, uploads the log of a cijoe run on the flashed
	// disk to the server's runs of the machine (before Done; also after
	// a failed flash whose cijoe ran).
	UploadRun func(ctx context.Context, mac fleet.MAC, workflow string, exit int, log []byte) error
	// Events mirrors the engine's events (--json-events).
	Events event.Sink
	Logger *slog.Logger
	// Disks lists block devices (default disk.List).
	Disks func() ([]disk.Disk, error)
	// Check plans a flash, Flash runs one (default flash.Check/Run).
	Check func(ctx context.Context, o flash.Options) (*flash.Plan, error)
	Flash func(ctx context.Context, o flash.Options) (*flash.Result, error)
	// Reboot restarts the machine (or runs --reboot-command).
	Reboot func() error
	// Now is the clock (tests fix it).
	Now func() time.Time
	// LogPath is shown on failures so the user knows where to look.
	LogPath string
}

func (c *Config) defaults() {
	if c.Disks == nil {
		c.Disks = disk.List
	}
	if c.Check == nil {
		c.Check = flash.Check
	}
	if c.Flash == nil {
		c.Flash = flash.Run
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Events == nil {
		c.Events = event.Discard
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

type step int

const (
	stepImages step = iota
	stepDisks
	stepProvision
	stepConfirm
	stepFlashing
	stepResult
)

// Provisioning choices, in menu order.
var provModes = fleet.FlashModes

// Model is the whole UI state (a Bubble Tea model).
type Model struct {
	cfg    Config
	ctx    context.Context
	step   step
	width  int
	height int
	status string // one line of feedback under the body

	images     []Image
	imagesErr  error
	imgCursor  int
	loading    bool
	disks      []disk.Disk
	disksErr   error
	diskCursor int

	provCursor int
	inputs     []textinput.Model // the chosen mode's fields
	inputFocus int
	editing    bool // typing into inputs

	checking bool
	planSeq  int // which check the shown plan belongs to
	plan     *flash.Plan
	planErr  error
	confirm  textinput.Model

	// flashing
	cancel    context.CancelFunc
	msgs      chan tea.Msg
	bar       progress.Model
	spin      spinner.Model
	phase     string
	total     int64
	written   int64
	rate      float64
	started   time.Time
	output    []string
	askAbort  bool
	aborting  bool
	flashOpts flash.Options

	// result
	result    *flash.Result
	flashErr  error
	elapsed   time.Duration
	reporting bool
	reportOK  bool
	reportErr error
	askReboot bool
	rebootErr error
	quitting  bool
	styles    styles
}

// New returns the model at its first step.
func New(ctx context.Context, cfg Config) Model {
	cfg.defaults()
	ci := textinput.New()
	ci.Prompt = "Type yes to flash: "
	ci.CharLimit = 8
	bar := progress.New(progress.WithoutPercentage(), progress.WithSolidFill("#5A56E0"))
	sp := spinner.New(spinner.WithSpinner(spinner.Line))
	return Model{cfg: cfg, ctx: ctx, width: 80, height: 24, confirm: ci, bar: bar, spin: sp, loading: true, styles: newStyles()}
}

// Messages.
type (
	imagesMsg struct {
		images []Image
		err    error
	}
	disksMsg struct {
		disks []disk.Disk
		err   error
	}
	planMsg struct {
		seq  int
		plan *flash.Plan
		err  error
	}
	engineMsg  struct{ e event.Event }
	flashedMsg struct {
		res *flash.Result
		err error
	}
	reportedMsg struct{ err error }
	rebootMsg   struct{ err error }
)

// Init loads the catalog.
func (m Model) Init() tea.Cmd { return tea.Batch(m.loadImages(), m.spin.Tick) }

func (m Model) loadImages() tea.Cmd {
	cat, ctx := m.cfg.Catalog, m.ctx
	return func() tea.Msg {
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		imgs, err := cat.List(lctx)
		return imagesMsg{imgs, err}
	}
}

func (m Model) loadDisks() tea.Cmd {
	list := m.cfg.Disks
	return func() tea.Msg {
		ds, err := list()
		return disksMsg{ds, err}
	}
}

// options is the flash the user has chosen so far.
func (m Model) options() flash.Options {
	img := m.images[m.imgCursor]
	o := flash.Options{Image: img.Ref, Target: m.disks[m.diskCursor].Path, SHA256: img.SHA256,
		Provision: provModes[m.provCursor], Logger: m.cfg.Logger}
	val := func(i int) string {
		if i < len(m.inputs) {
			return strings.TrimSpace(m.inputs[i].Value())
		}
		return ""
	}
	switch o.Provision {
	case fleet.ModeCloudInit:
		o.UserData, o.Hostname = flash.FileInput(val(0)), val(1)
	case fleet.ModeCijoe:
		o.CijoeWorkflow, o.CijoeConfig = val(0), val(1)
	case fleet.ModeNone:
		o.Provision = ""
	}
	return o
}

func (m Model) checkPlan() tea.Cmd {
	o, ctx, check, seq := m.options(), m.ctx, m.cfg.Check, m.planSeq
	return func() tea.Msg {
		p, err := check(ctx, o)
		return planMsg{seq, p, err}
	}
}

// startFlash runs the engine in the background; its events and its end
// come back as messages through m.msgs.
func (m *Model) startFlash() tea.Cmd {
	ctx, cancel := context.WithCancel(m.ctx)
	m.cancel = cancel
	m.msgs = make(chan tea.Msg, 256)
	msgs := m.msgs
	o := m.options()
	mirror := m.cfg.Events
	o.Sink = event.Func(func(e event.Event) {
		mirror.Emit(e)
		if e.Event == event.Progress {
			select { // never hold the engine up for a redraw
			case msgs <- engineMsg{e}:
			default:
			}
			return
		}
		msgs <- engineMsg{e}
	})
	m.flashOpts = o
	m.step, m.started, m.phase = stepFlashing, m.cfg.Now(), "starting"
	m.total, m.written, m.rate, m.output = 0, 0, 0, nil
	if v := m.images[m.imgCursor].Virtual; v != nil {
		// A stream may not know its decoded size; the catalog may.
		m.total = *v
	}
	m.askAbort, m.aborting, m.result, m.flashErr, m.status = false, false, nil, nil, ""
	m.reporting, m.reportOK, m.reportErr = false, false, nil
	run := m.cfg.Flash
	m.cfg.Logger.Info("flash starting", "image", o.Image, "target", o.Target, "provisioning", o.Provision)
	go func() {
		res, err := run(ctx, o)
		msgs <- flashedMsg{res, err}
	}()
	return waitMsg(msgs)
}

// imageName is the catalog name of an image path or URL: its last
// element, unescaped.
func imageName(image string) string {
	if u, err := url.Parse(image); err == nil && u.Scheme != "" {
		image = u.Path
	}
	return path.Base(filepath.ToSlash(image))
}

func waitMsg(c chan tea.Msg) tea.Cmd { return func() tea.Msg { return <-c } }

func (m Model) report() tea.Cmd {
	done, mac, ctx := m.cfg.Done, m.cfg.MAC, m.ctx
	totals := fleet.Progress{Image: imageName(m.flashOpts.Image)}
	if r := m.result; r != nil {
		totals.BytesWritten, totals.TotalBytes, totals.Rate, totals.SHA256 = r.BytesWritten, r.TotalBytes, r.Rate, r.SHA256
	}
	upload := m.uploadRun()
	return func() tea.Msg {
		upload()
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		return reportedMsg{done(rctx, mac, totals)}
	}
}

// maxUploadLog is how much of a cijoe log is uploaded: its end.
const maxUploadLog = 4<<20 - 1024

// uploadRun is the upload of the flash's cijoe log to the server (a
// no-op without a server, or when cijoe did not run to an exit); its
// failure is logged, never fatal: the flash stands.
func (m Model) uploadRun() func() {
	up, mac, ctx, log := m.cfg.UploadRun, m.cfg.MAC, m.ctx, m.cfg.Logger
	r := m.result
	if up == nil || mac.IsZero() || r == nil || r.Provision == nil || r.Provision.LogPath == "" || r.Provision.CijoeExit == nil {
		return func() {}
	}
	path, exit, wf := r.Provision.LogPath, *r.Provision.CijoeExit, filepath.Base(m.flashOpts.CijoeWorkflow)
	return func() {
		b, err := os.ReadFile(path)
		if err == nil {
			if len(b) > maxUploadLog {
				b = append([]byte("[bty-tui: the log's start was cut]\n"), b[len(b)-maxUploadLog:]...)
			}
			uctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err = up(uctx, mac, wf, exit, b)
			cancel()
		}
		if err != nil {
			log.Error("uploading the cijoe log", "mac", mac, "log", path, "err", err)
			return
		}
		log.Info("cijoe log uploaded to the server's runs", "mac", mac, "log", path)
	}
}

// Update handles one message.
func (m Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		m.bar.Width = max(10, min(60, m.width-20))
		return m, nil
	case spinner.TickMsg:
		var cmd tea.Cmd
		m.spin, cmd = m.spin.Update(msg)
		return m, cmd
	case imagesMsg:
		m.loading = false
		m.images, m.imagesErr = msg.images, msg.err
		m.imgCursor = min(m.imgCursor, max(0, len(m.images)-1))
		return m, nil
	case disksMsg:
		m.disks, m.disksErr = msg.disks, msg.err
		m.diskCursor = firstSelectable(m.disks, m.diskCursor)
		return m, nil
	case planMsg:
		if msg.seq != m.planSeq {
			return m, nil // a plan for choices since changed
		}
		m.checking = false
		m.plan, m.planErr = msg.plan, msg.err
		return m, nil
	case engineMsg:
		m.onEvent(msg.e)
		return m, waitMsg(m.msgs)
	case flashedMsg:
		m.result, m.flashErr = msg.res, msg.err
		m.elapsed = m.cfg.Now().Sub(m.started)
		m.step, m.askAbort, m.status = stepResult, false, ""
		if m.cancel != nil {
			m.cancel()
		}
		if msg.err != nil {
			m.cfg.Logger.Error("flash failed", "err", msg.err)
		} else {
			m.cfg.Logger.Info("flash done", "image", m.flashOpts.Image, "target", m.flashOpts.Target, "elapsed", m.elapsed)
		}
		if msg.err == nil && !m.cfg.MAC.IsZero() && m.cfg.Done != nil {
			m.reporting = true
			return m, m.report()
		}
		if msg.err != nil {
			// A failed flash whose cijoe ran: its log is the story.
			upload := m.uploadRun()
			return m, func() tea.Msg { upload(); return nil }
		}
		return m, nil
	case reportedMsg:
		m.reporting, m.reportErr, m.reportOK = false, msg.err, msg.err == nil
		if msg.err != nil {
			m.cfg.Logger.Error("reporting done", "mac", m.cfg.MAC, "err", msg.err)
		}
		return m, nil
	case rebootMsg:
		if msg.err != nil {
			m.rebootErr = msg.err
			m.askReboot = false
			return m, nil
		}
		m.quitting = true
		return m, tea.Quit
	case tea.KeyMsg:
		return m.onKey(msg)
	}
	return m, nil
}

func (m *Model) onEvent(e event.Event) {
	switch e.Event {
	case event.Started:
		if e.TotalBytes > 0 {
			m.total = e.TotalBytes
		}
		m.phase = "starting"
	case event.Writing:
		m.phase = "writing " + e.Format
	case event.Progress:
		m.written, m.rate = e.BytesWritten, e.Rate
		if e.TotalBytes > 0 {
			m.total = e.TotalBytes
		}
	case event.Synced:
		m.phase = "synced"
		if m.total > 0 {
			m.written = m.total
		}
	case event.Partprobed:
		m.phase = "re-reading the partition table"
	case event.Verified:
		m.phase = "verified"
	case event.Provisioning:
		m.phase = "provisioning (" + e.Mode + ")"
	case event.Output:
		m.output = append(m.output, e.Line)
		if len(m.output) > 3 {
			m.output = m.output[len(m.output)-3:]
		}
	case event.Note:
		m.status = e.Note
	case event.Done:
		m.phase = "done"
	case event.Failed:
		m.phase = "failed"
	}
}

func firstSelectable(ds []disk.Disk, from int) int {
	if from < len(ds) && len(ds[from].Problems()) == 0 {
		return from
	}
	for i, d := range ds {
		if len(d.Problems()) == 0 {
			return i
		}
	}
	return 0
}

func (m Model) onKey(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	key := k.String()
	if m.step == stepFlashing {
		return m.onFlashingKey(key)
	}
	if key == "ctrl+c" {
		m.quitting = true
		return m, tea.Quit
	}
	if m.askReboot {
		switch key {
		case "y", "Y":
			m.status = "rebooting…"
			reboot := m.cfg.Reboot
			return m, func() tea.Msg {
				if reboot == nil {
					return rebootMsg{errors.New("rebooting is not available here")}
				}
				return rebootMsg{reboot()}
			}
		default:
			m.askReboot = false
			m.status = "not rebooting"
		}
		return m, nil
	}
	m.status = ""
	switch m.step {
	case stepImages:
		return m.onImagesKey(key)
	case stepDisks:
		return m.onDisksKey(key)
	case stepProvision:
		return m.onProvisionKey(k)
	case stepConfirm:
		return m.onConfirmKey(k)
	case stepResult:
		return m.onResultKey(key)
	}
	return m, nil
}

func (m Model) onImagesKey(key string) (tea.Model, tea.Cmd) {
	switch key {
	case "q", "esc":
		m.quitting = true
		return m, tea.Quit
	case "up", "k":
		m.imgCursor = max(0, m.imgCursor-1)
	case "down", "j":
		m.imgCursor = min(max(0, len(m.images)-1), m.imgCursor+1)
	case "home", "g":
		m.imgCursor = 0
	case "end", "G":
		m.imgCursor = max(0, len(m.images)-1)
	case "r":
		m.loading = true
		return m, m.loadImages()
	case "enter":
		if m.loading || len(m.images) == 0 {
			return m, nil
		}
		if e := m.images[m.imgCursor].Err; e != "" {
			m.status = "cannot flash " + m.images[m.imgCursor].Name + ": " + e
			return m, nil
		}
		m.step, m.disks, m.disksErr = stepDisks, nil, nil
		return m, m.loadDisks()
	}
	return m, nil
}

func (m Model) onDisksKey(key string) (tea.Model, tea.Cmd) {
	switch key {
	case "q", "esc":
		m.step = stepImages
	case "up", "k":
		m.diskCursor = max(0, m.diskCursor-1)
	case "down", "j":
		m.diskCursor = min(max(0, len(m.disks)-1), m.diskCursor+1)
	case "r":
		return m, m.loadDisks()
	case "enter":
		if len(m.disks) == 0 {
			return m, nil
		}
		d := m.disks[m.diskCursor]
		if p := d.Problems(); len(p) > 0 {
			m.status = "Pick another disk: " + d.Path + " cannot be flashed (the reason is shown above)."
			return m, nil
		}
		m.step, m.editing = stepProvision, false
	}
	return m, nil
}

// provisionFields are the text fields a mode asks for.
func provisionFields(mode fleet.Mode) [][2]string {
	switch mode {
	case fleet.ModeCloudInit:
		return [][2]string{{"User-data file: ", "/path/to/user-data (#cloud-config)"}, {"Hostname (optional): ", "keep the image's"}}
	case fleet.ModeCijoe:
		return [][2]string{{"Workflow file: ", "/path/to/workflow.yaml"}, {"Config file (optional): ", "cijoe's default"}}
	}
	return nil
}

func (m Model) onProvisionKey(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	key := k.String()
	if m.editing {
		switch key {
		case "esc":
			m.editing = false
			return m, nil
		case "tab", "down", "shift+tab", "up":
			m.inputs[m.inputFocus].Blur()
			if key == "tab" || key == "down" {
				m.inputFocus = (m.inputFocus + 1) % len(m.inputs)
			} else {
				m.inputFocus = (m.inputFocus + len(m.inputs) - 1) % len(m.inputs)
			}
			return m, m.inputs[m.inputFocus].Focus()
		case "enter":
			if strings.TrimSpace(m.inputs[0].Value()) == "" {
				m.status = strings.TrimSuffix(strings.TrimSpace(m.inputs[0].Prompt), ":") + " is required"
				return m, nil
			}
			return m.toConfirm()
		}
		var cmd tea.Cmd
		m.inputs[m.inputFocus], cmd = m.inputs[m.inputFocus].Update(k)
		return m, cmd
	}
	switch key {
	case "q", "esc":
		m.step = stepDisks
	case "up", "k":
		m.provCursor = max(0, m.provCursor-1)
	case "down", "j":
		m.provCursor = min(len(provModes)-1, m.provCursor+1)
	case "enter":
		fields := provisionFields(provModes[m.provCursor])
		if len(fields) == 0 {
			m.inputs = nil
			return m.toConfirm()
		}
		if len(m.inputs) != len(fields) || m.inputs[0].Prompt != fields[0][0] {
			m.inputs = make([]textinput.Model, len(fields))
			for i, f := range fields {
				ti := textinput.New()
				ti.Prompt, ti.Placeholder, ti.CharLimit = f[0], f[1], 4096
				m.inputs[i] = ti
			}
		}
		m.editing, m.inputFocus = true, 0
		return m, m.inputs[0].Focus()
	}
	return m, nil
}

func (m Model) toConfirm() (tea.Model, tea.Cmd) {
	m.step, m.editing, m.checking, m.plan, m.planErr = stepConfirm, false, true, nil, nil
	m.planSeq++
	m.confirm.Reset()
	return m, tea.Batch(m.checkPlan(), m.confirm.Focus())
}

func (m Model) onConfirmKey(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	switch k.String() {
	case "esc":
		m.step = stepProvision
		return m, nil
	case "enter":
		if m.checking || m.plan == nil || !m.plan.OK {
			return m, nil
		}
		if strings.TrimSpace(strings.ToLower(m.confirm.Value())) != "yes" {
			m.status = "Not flashing: type yes (the whole word) and press Enter, or Esc to go back."
			m.confirm.Reset()
			return m, nil
		}
		return m, m.startFlash()
	}
	var cmd tea.Cmd
	m.confirm, cmd = m.confirm.Update(k)
	return m, cmd
}

func (m Model) onFlashingKey(key string) (tea.Model, tea.Cmd) {
	if m.askAbort {
		switch key {
		case "y", "Y":
			m.askAbort, m.aborting, m.phase = false, true, "aborting"
			m.cfg.Logger.Warn("flash aborted by the user")
			if m.cancel != nil {
				m.cancel()
			}
		case "n", "N", "esc":
			m.askAbort = false
		}
		return m, nil
	}
	switch key {
	case "ctrl+c":
		if !m.aborting {
			m.askAbort = true
		}
	case "q", "esc":
		m.status = "A flash is running: Ctrl-C asks to abort it."
	}
	return m, nil
}

func (m Model) onResultKey(key string) (tea.Model, tea.Cmd) {
	switch key {
	case "q", "esc":
		m.quitting = true
		return m, tea.Quit
	case "enter":
		m.step, m.loading, m.status = stepImages, true, ""
		return m, m.loadImages()
	case "R":
		m.askReboot, m.rebootErr = true, nil
	}
	return m, nil
}

// Result reports how the session ended, for the exit code: the last
// flash's error (nil when it succeeded or none ran).
func (m Model) Result() (ran bool, err error) {
	return m.result != nil || m.flashErr != nil, m.flashErr
}

var _ tea.Model = Model{}

func describeErr(err error) string {
	if errors.Is(err, context.Canceled) {
		return "aborted at your request (Ctrl-C) before the image was complete"
	}
	return err.Error()
}

func pct(n, total int64) string {
	if total <= 0 {
		return "  ?%"
	}
	return fmt.Sprintf("%3d%%", min(100, n*100/total))
}
