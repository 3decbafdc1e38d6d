package fleet

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Flashes (docs/reference.md, "Flash history"): every flash attempt is a
// record of its own, from the request (or the PXE contact that started
// it) to ready, failed, timeout or cancelled, with the time of each
// phase. A machine's record carries its latest flash (Machine.Flash);
// the store keeps every one.

// Trigger says what started a flash.
type Trigger string

// The triggers.
const (
	TriggerPolicy Trigger = "policy" // a PXE contact of a flash-policy machine
	TriggerDemand Trigger = "demand" // POST /machines/{mac}/reflash
	TriggerTUI    Trigger = "tui"    // an operator in the interactive live env
	// The automatic reflashes (docs/reference.md, "Schedules",
	// "Failure recovery", "Rollouts"): each carries the id of its
	// schedule or rollout (Flash.TriggerID) or the failure (Flash.Cause).
	TriggerSchedule Trigger = "schedule" // a schedule's cron time came
	TriggerFailure  Trigger = "failure"  // failure recovery
	TriggerRollout  Trigger = "rollout"  // a rollout reached the machine
)

// Requested reports whether a flash of trigger t was asked for (by an
// operator, a schedule, recovery or a rollout) rather than started by a
// PXE contact: its machine's next PXE contacts get the live env until
// it reports, whatever the boot policy.
func (t Trigger) Requested() bool {
	return t == TriggerDemand || t == TriggerSchedule || t == TriggerFailure || t == TriggerRollout
}

// FlashResult is where a flash ended, or FlashRunning.
type FlashResult string

// The results.
const (
	FlashRunning   FlashResult = "running"
	FlashReady     FlashResult = "ready"
	FlashFailed    FlashResult = "failed"
	FlashTimeout   FlashResult = "timeout"
	FlashCancelled FlashResult = "cancelled"
)

// FlashResults lists the results, running first.
var FlashResults = []FlashResult{FlashRunning, FlashReady, FlashFailed, FlashTimeout, FlashCancelled}

// Valid reports whether r is one of FlashResults.
func (r FlashResult) Valid() bool {
	for _, v := range FlashResults {
		if r == v {
			return true
		}
	}
	return false
}

// Phase is how far a flash got (Flash.Phase: the last one reached).
type Phase string

// The phases, in order.
const (
	PhaseRequested Phase = "requested" // asked for (demand), not yet powered
	PhasePower     Phase = "power"     // the BMC powered or cycled the machine
	PhasePXE       Phase = "pxe"       // a PXE contact was served the live env
	PhaseFetch     Phase = "fetch"     // the live env started fetching the image
	PhaseDone      Phase = "done"      // the live env reported the flash done
	PhaseDisk      Phase = "disk"      // a PXE contact after done was sent to the disk
	PhaseReady     Phase = "ready"     // the flashed OS passed its ready check
)

// Phases lists the phases in order.
var Phases = []Phase{PhaseRequested, PhasePower, PhasePXE, PhaseFetch, PhaseDone, PhaseDisk, PhaseReady}

// ReadyCheck says when a flashed machine is ready (see
// docs/reference.md, "Readiness"). The checks are "phone-home" (its OS calls POST /pxe/{mac}/ready with
// the flash's token; bty seeds cloud-init's phone_home module for it),
// "tcp:PORT" (a TCP port answers on its OS address), "none" (ready at
// done), or "" on a record: phone-home in cloud-init mode, else tcp:22.
type ReadyCheck string

// The fixed ready checks (besides "tcp:PORT").
const (
	ReadyDefault   ReadyCheck = ""
	ReadyPhoneHome ReadyCheck = "phone-home"
	ReadyNone      ReadyCheck = "none"
	ReadyTCP22     ReadyCheck = "tcp:22"
)

// Port is the TCP port of a "tcp:PORT" check (0 for the others).
func (c ReadyCheck) Port() int {
	p, ok := strings.CutPrefix(string(c), "tcp:")
	if !ok {
		return 0
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != p {
		return 0
	}
	return n
}

// Valid reports whether c is a ready check a record accepts.
func (c ReadyCheck) Valid() bool {
	return c == ReadyDefault || c == ReadyPhoneHome || c == ReadyNone || c.Port() != 0
}

// Effective is the check a flash provisioned with mode uses: c, or for
// "" phone-home in cloud-init mode (where bty can seed it) and tcp:22
// otherwise.
func (c ReadyCheck) Effective(mode Mode) ReadyCheck {
	if c != ReadyDefault {
		return c
	}
	if mode.Effective() == ModeCloudInit {
		return ReadyPhoneHome
	}
	return ReadyTCP22
}

// Flash deadlines: how long a flash may take from its request to ready
// before it is marked timeout. A record's flash_deadline ("" for the
// server's default) must lie within these bounds.
const (
	DefaultFlashDeadline = time.Hour
	MinFlashDeadline     = time.Minute
	MaxFlashDeadline     = 48 * time.Hour
)

// ParseFlashDeadline is s ("45m", "2h") as a duration within
// MinFlashDeadline and MaxFlashDeadline; "" is 0 (the server's default).
func ParseFlashDeadline(s string) (time.Duration, error) {
	return parseBounded("flash_deadline", s, MinFlashDeadline, MaxFlashDeadline, "like 45m or 2h (empty: the server's default)")
}

// parseBounded is s as a duration within [lo, hi] ("" is 0), else a
// *ValidationError of field saying what to give (example).
func parseBounded(field, s string, lo, hi time.Duration, example string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if len(s) > 64 || err != nil || d < lo || d > hi {
		return 0, &ValidationError{Field: field, Msg: fmt.Sprintf("%q: give a duration from %v to %v, %s", truncate(s, 64), lo, hi, example)}
	}
	return d, nil
}

// Flash is one flash attempt. Times are UTC; a phase's time is null
// until it is reached.
type Flash struct {
	ID      int64   `json:"id"`
	MAC     MAC     `json:"mac"`
	Trigger Trigger `json:"trigger"`
	// TriggerID is the schedule or rollout that started the flash (0:
	// none); Cause says why an automatic flash was started (a failure
	// recovery's reason, a schedule's name).
	TriggerID int64  `json:"trigger_id"`
	Cause     string `json:"cause"`
	// What is flashed: the image, its decoded sha256 when the catalog
	// knows it, the provisioning mode and host name (a demand's
	// overrides, else the record's at the time).
	Image        string      `json:"image"`
	ImageSHA256  string      `json:"image_sha256"`
	Provisioning Mode        `json:"provisioning"`
	Hostname     string      `json:"hostname"`
	ReadyCheck   ReadyCheck  `json:"ready_check"`
	Result       FlashResult `json:"result"`
	// Phase is the last phase reached; Reason says why a flash ended
	// other than ready.
	Phase  Phase  `json:"phase"`
	Reason string `json:"reason"`
	// Power is how the machine was started: "pxe-once+cycle",
	// "pxe-once+on", "cycle", "on" (the BMC could not set a one-time PXE
	// boot), "none" (no power driver: rebooted by other means), or ""
	// (the flash started at a PXE contact).
	Power       string     `json:"power"`
	RequestedAt time.Time  `json:"requested_at"`
	PowerAt     *time.Time `json:"power_at"`
	PXEAt       *time.Time `json:"pxe_at"`
	FetchAt     *time.Time `json:"fetch_at"`
	DoneAt      *time.Time `json:"done_at"`
	DiskAt      *time.Time `json:"disk_at"`
	ReadyAt     *time.Time `json:"ready_at"`
	EndedAt     *time.Time `json:"ended_at"`
	Deadline    time.Time  `json:"deadline"`
	// BytesWritten, TotalBytes and Rate (bytes/s) are the live env's
	// last progress report, or its done report's totals.
	BytesWritten int64   `json:"bytes_written"`
	TotalBytes   int64   `json:"total_bytes"`
	Rate         float64 `json:"rate"`
	// BytesFetched is what the live env fetched from bty-web (a delta
	// flash fetches only the chunks that differ); ChunksTotal counts the
	// image's chunks, ChunksZero those that are zero (zeroed, never
	// compared) and ChunksEqual the data chunks the disk already held
	// (all 0: not a delta flash). From the done report.
	BytesFetched int64 `json:"bytes_fetched"`
	ChunksTotal  int64 `json:"chunks_total"`
	ChunksZero   int64 `json:"chunks_zero"`
	ChunksEqual  int64 `json:"chunks_equal"`
	// OSAddress is where the flashed OS answered its ready check.
	OSAddress string `json:"os_address"`
	// OSUser is the default user the live env found in the flashed
	// image's cloud-init configuration ("" none found): the login of a
	// cijoe-online run when the record names none.
	OSUser string `json:"os_user"`
	// UserDataSHA256 and MetaDataSHA256 are the hashes of the seed the
	// flash was made with ("" none); KnownGoodRun is the run whose
	// baseline the flash restores (0: not a reflash to known-good).
	UserDataSHA256 string `json:"user_data_sha256"`
	MetaDataSHA256 string `json:"meta_data_sha256"`
	KnownGoodRun   int64  `json:"known_good_run"`
	// TokenHash is the sha256 of the flash cycle's token the phone-home
	// must carry (never on the wire).
	TokenHash string `json:"-"`
}

// Running reports whether f is in progress.
func (f *Flash) Running() bool { return f != nil && f.Result == FlashRunning }

// Duration is how long f took (or has taken until now).
func (f *Flash) Duration(now time.Time) time.Duration {
	if f.EndedAt != nil {
		return f.EndedAt.Sub(f.RequestedAt)
	}
	return now.Sub(f.RequestedAt)
}

// PhaseAt is when f reached phase p (nil: not reached).
func (f *Flash) PhaseAt(p Phase) *time.Time {
	switch p {
	case PhaseRequested:
		t := f.RequestedAt
		return &t
	case PhasePower:
		return f.PowerAt
	case PhasePXE:
		return f.PXEAt
	case PhaseFetch:
		return f.FetchAt
	case PhaseDone:
		return f.DoneAt
	case PhaseDisk:
		return f.DiskAt
	case PhaseReady:
		return f.ReadyAt
	}
	return nil
}

// awaitingPXE reports whether f is a requested flash (Trigger.Requested)
// whose live env has not reported yet: the machine's PXE contacts get
// the live env.
func (f *Flash) awaitingPXE() bool {
	return f.Running() && f.Trigger.Requested() && f.DoneAt == nil
}

// AwaitingReady reports whether f is done and waits for its ready check.
func (f *Flash) AwaitingReady() bool { return f.Running() && f.DoneAt != nil }

func (f *Flash) reach(p Phase, at time.Time) {
	at = at.UTC()
	if t := f.phaseField(p); t != nil && *t == nil {
		*t = &at
	}
	if phaseIndex(p) > phaseIndex(f.Phase) {
		f.Phase = p
	}
}

func (f *Flash) phaseField(p Phase) **time.Time {
	switch p {
	case PhasePower:
		return &f.PowerAt
	case PhasePXE:
		return &f.PXEAt
	case PhaseFetch:
		return &f.FetchAt
	case PhaseDone:
		return &f.DoneAt
	case PhaseDisk:
		return &f.DiskAt
	case PhaseReady:
		return &f.ReadyAt
	}
	return nil
}

func phaseIndex(p Phase) int {
	for i, v := range Phases {
		if v == p {
			return i
		}
	}
	return -1
}

// end closes f with result r and reason.
func (f *Flash) end(r FlashResult, reason string, at time.Time) {
	at = at.UTC()
	f.Result, f.EndedAt = r, &at
	reason = strings.Join(strings.Fields(reason), " ") // one line, for tables and logs
	if utf8.RuneCountInString(reason) > MaxFailureLen {
		reason = string([]rune(reason)[:MaxFailureLen])
	}
	f.Reason = reason
}

// next names what f waits for in its phase, for a timeout's reason.
func (f *Flash) next() string {
	switch f.Phase {
	case PhaseRequested:
		return "the power cycle"
	case PhasePower:
		return "a PXE contact (does the machine PXE-boot? is bty-web's proxy-DHCP or the site's DHCP pointing it here?)"
	case PhasePXE:
		return "the live env to fetch the image (see the machine's console)"
	case PhaseFetch:
		return "the live env's done report"
	case PhaseDone, PhaseDisk:
		return "the flashed OS's ready check (" + string(f.ReadyCheck) + ")"
	}
	return "its next phase"
}

// ReflashRequest is POST /machines/{mac}/reflash: the overrides of this
// one flash (nil: the record's value).
type ReflashRequest struct {
	Image        *string `json:"image"`
	Provisioning *Mode   `json:"provisioning"`
	Hostname     *string `json:"hostname"`
	// KnownGood reflashes the machine's known-good baseline: its image,
	// host name and seed, then reruns its workflow (no other field may
	// be set with it).
	KnownGood bool `json:"known_good"`
	// Trigger, TriggerID and Cause are set by bty-web's automatic
	// reflashes (a zero Trigger is TriggerDemand); never on the wire.
	Trigger   Trigger `json:"-"`
	TriggerID int64   `json:"-"`
	Cause     string  `json:"-"`
}

// Validate checks r's fields like MachineUpdate.Validate checks the
// same fields of a record (finer checks are the caller's).
func (r ReflashRequest) Validate() []*ValidationError {
	if r.KnownGood && (r.Image != nil || r.Provisioning != nil || r.Hostname != nil) {
		return []*ValidationError{{Field: "known_good", Msg: "restores the baseline's image, host name and seed: set no image, provisioning or hostname with it"}}
	}
	return MachineUpdate{Image: r.Image, ProvisioningMode: r.Provisioning, Hostname: r.Hostname}.Validate()
}

// ErrNoKnownGood is a reflash to known-good of a machine without one.
var ErrNoKnownGood = errors.New("the machine has no known-good baseline yet: a successful cijoe-online run records one")

// FlashInProgressError is a reflash refused because a flash is running.
type FlashInProgressError struct{ Flash Flash }

func (e *FlashInProgressError) Error() string {
	return fmt.Sprintf("flash %d of %s is in progress (%s, phase %s, since %s): wait for it or cancel it (POST /machines/%s/flashes/%d/cancel, bty-ctl machines reflash --cancel)",
		e.Flash.ID, e.Flash.MAC, e.Flash.Trigger, e.Flash.Phase, e.Flash.RequestedAt.Format(time.RFC3339), e.Flash.MAC, e.Flash.ID)
}

// FlashRun is what a flash is started with: the server's default
// deadline (a record's flash_deadline wins) and the image's decoded
// sha256 when the catalog knows it.
type FlashRun struct {
	At              time.Time
	DefaultDeadline time.Duration
	ImageSHA256     string
}

func (m Machine) deadline(r FlashRun) time.Time {
	d, _ := ParseFlashDeadline(m.FlashDeadline)
	if d == 0 {
		d = r.DefaultDeadline
	}
	if d == 0 {
		d = DefaultFlashDeadline
	}
	return r.At.UTC().Add(d)
}

// Reflash is m with a demand flash requested at r.At: its next PXE
// contact gets the live env flashing req's image (else the record's)
// whatever the boot policy, which stays as it is. A running flash is a
// *FlashInProgressError; no image at all a *ValidationError.
func (m Machine) Reflash(req ReflashRequest, r FlashRun) (Machine, error) {
	if m.Flash.Running() {
		return m, &FlashInProgressError{Flash: *m.Flash}
	}
	f := &Flash{MAC: m.MAC, Trigger: TriggerDemand, Image: m.Image, Provisioning: m.ProvisioningMode, Hostname: m.Hostname,
		Result: FlashRunning, Phase: PhaseRequested, RequestedAt: r.At.UTC(), Deadline: m.deadline(r), ImageSHA256: r.ImageSHA256,
		TriggerID: req.TriggerID, Cause: truncate(req.Cause, MaxFailureLen)}
	if req.Trigger.Requested() {
		f.Trigger = req.Trigger
	}
	setField(&f.Image, req.Image)
	setField(&f.Provisioning, req.Provisioning)
	setField(&f.Hostname, req.Hostname)
	f.seed(m)
	if req.KnownGood {
		k := m.LastKnownGood
		if k.IsZero() || k.RunID == 0 {
			return m, ErrNoKnownGood
		}
		f.Image, f.ImageSHA256, f.Hostname, f.Provisioning = k.Image, k.ImageSHA256, k.Hostname, ModeCijoeOnline
		f.UserDataSHA256, f.MetaDataSHA256, f.KnownGoodRun = k.UserDataSHA256, k.MetaDataSHA256, k.RunID
	}
	if f.Image == "" {
		return m, &ValidationError{Field: "image", Msg: "the machine has no image assigned: name one (\"image\", bty-ctl machines reflash --image NAME)"}
	}
	f.ReadyCheck = m.ReadyCheck.Effective(f.Provisioning)
	m.Flash = f
	m.UpdatedAt = r.At.UTC()
	return m, nil
}

// Powered is m after the BMC started its flash id at at ("how" as in
// Flash.Power). A failed start (err) ends the flash failed: the machine
// would otherwise be flashed whenever it next PXE-boots, long after the
// caller gave up.
func (m Machine) Powered(id int64, how string, err error, at time.Time) Machine {
	if !m.Flash.Running() || m.Flash.ID != id {
		return m
	}
	f := *m.Flash
	f.Power = how
	if err != nil {
		f.end(FlashFailed, "power: "+err.Error(), at)
	} else if how != "none" {
		f.reach(PhasePower, at)
	}
	m.Flash = &f
	return m
}

// Cancel is m with its flash id cancelled at at, or ok false when that
// flash is not the machine's running one.
func (m Machine) Cancel(id int64, at time.Time) (Machine, bool) {
	if !m.Flash.Running() || m.Flash.ID != id {
		return m, false
	}
	f := *m.Flash
	f.end(FlashCancelled, "cancelled in phase "+string(f.Phase), at)
	m.Flash = &f
	return m, true
}

// TimeOut is m with its running flash marked timeout when its deadline
// passed at now (changed false otherwise).
func (m Machine) TimeOut(now time.Time) (Machine, bool) {
	if !m.Flash.Running() || now.Before(m.Flash.Deadline) {
		return m, false
	}
	f := *m.Flash
	f.end(FlashTimeout, "stuck in phase "+string(f.Phase)+": no "+f.next()+" before the deadline "+f.Deadline.Format(time.RFC3339), now)
	m.Flash = &f
	return m, true
}

// ErrNotAwaitingReady is a ready report for a machine whose flash does
// not wait for one; it wraps ErrCycleRefused.
var errNotAwaitingReady = refusal("no flash of this machine waits for its ready report")

// PhoneHome is m after its flashed OS called POST /pxe/{mac}/ready from
// ip at now with token: accepted only while its flash waits for ready
// and with that flash's cycle token; the address becomes the OS
// address. Otherwise an error wrapping ErrCycleRefused.
func (m Machine) PhoneHome(token, ip string, now time.Time) (Machine, error) {
	f := m.Flash
	switch {
	case !f.AwaitingReady():
		return m, errNotAwaitingReady
	case token == "" || f.TokenHash == "":
		return m, refusal("no token (the phone-home URL carries ?cycle=TOKEN)")
	case subtle.ConstantTimeCompare([]byte(HashCycleToken(token)), []byte(f.TokenHash)) != 1:
		return m, refusal("wrong token")
	}
	return m.Ready(ip, now), nil
}

// Ready is m with its flash awaiting ready marked ready at now, its OS
// at ip.
func (m Machine) Ready(ip string, now time.Time) Machine {
	if !m.Flash.AwaitingReady() {
		return m
	}
	f := *m.Flash
	f.OSAddress = ip
	f.reach(PhaseReady, now)
	f.end(FlashReady, "", now)
	m.Flash = &f
	return m
}

// Progress is the live env's report of its flash (POST
// /pxe/{mac}/progress, and the totals of done).
type Progress struct {
	Image        string  `json:"image"`
	BytesWritten int64   `json:"bytes_written"`
	TotalBytes   int64   `json:"total_bytes"`
	Rate         float64 `json:"rate"`
	// SHA256 is the decoded image's sha256 the live env verified (done).
	SHA256 string `json:"sha256"`
	// OSUser is the flashed image's cloud-init default user (done; ""
	// when the image names none).
	OSUser string `json:"os_user"`
	// BytesFetched, ChunksTotal, ChunksZero and ChunksEqual are a delta flash's
	// totals (done; see Flash).
	BytesFetched int64 `json:"bytes_fetched,omitempty"`
	ChunksTotal  int64 `json:"chunks_total,omitempty"`
	ChunksZero   int64 `json:"chunks_zero,omitempty"`
	ChunksEqual  int64 `json:"chunks_equal,omitempty"`
}

// Sane is p with negative or absurd numbers zeroed and the image name
// cut to MaxNameBytes, as an open route's input must be.
func (p Progress) Sane() Progress {
	if p.BytesWritten < 0 || p.BytesWritten > 1<<56 {
		p.BytesWritten = 0
	}
	if p.TotalBytes < 0 || p.TotalBytes > 1<<56 {
		p.TotalBytes = 0
	}
	if !(p.Rate >= 0 && p.Rate < 1<<50) { // NaN too
		p.Rate = 0
	}
	if len(p.Image) > MaxNameBytes || !utf8.ValidString(p.Image) || strings.ContainsAny(p.Image, "\x00\r\n/") {
		p.Image = ""
	}
	if len(p.SHA256) != 64 || strings.Trim(p.SHA256, "0123456789abcdef") != "" {
		p.SHA256 = ""
	}
	if !validUser(p.OSUser) {
		p.OSUser = ""
	}
	if p.BytesFetched < 0 || p.BytesFetched > 1<<56 {
		p.BytesFetched = 0
	}
	if p.ChunksTotal < 0 || p.ChunksTotal > 1<<32 || p.ChunksEqual < 0 || p.ChunksZero < 0 || p.ChunksEqual+p.ChunksZero > p.ChunksTotal {
		p.ChunksTotal, p.ChunksZero, p.ChunksEqual = 0, 0, 0
	}
	return p
}

func (f *Flash) progress(p Progress) {
	p = p.Sane()
	if p.BytesWritten > 0 {
		f.BytesWritten = p.BytesWritten
	}
	if p.TotalBytes > 0 {
		f.TotalBytes = p.TotalBytes
	}
	if p.Rate > 0 {
		f.Rate = p.Rate
	}
	if p.BytesFetched > 0 {
		f.BytesFetched = p.BytesFetched
	}
	if p.ChunksTotal > 0 {
		f.ChunksTotal, f.ChunksZero, f.ChunksEqual = p.ChunksTotal, p.ChunksZero, p.ChunksEqual
	}
	if p.SHA256 != "" {
		f.ImageSHA256 = p.SHA256
	}
}

// Progressed is m after a progress report p in its flash cycle (the
// caller checked the cycle: CheckCycle) at now: the flash reaches the
// fetch phase.
func (m Machine) Progressed(p Progress, now time.Time) Machine {
	if !m.Flash.Running() || m.Flash.DoneAt != nil {
		return m
	}
	f := *m.Flash
	f.reach(PhaseFetch, now)
	f.progress(p)
	m.Flash = &f
	return m
}

// contactFlash is the flash bookkeeping of a contact v served d (not a
// conflict): a flash served to a machine whose demand flash waits gets
// its PXE time and the cycle's token; one served otherwise starts a
// policy flash (a running flash the machine left behind by booting
// again ends failed); the disk served after done is the disk phase.
func (m Machine) contactFlash(v Visit, d Decision) Machine {
	f := m.Flash
	r := FlashRun{At: v.At, DefaultDeadline: v.FlashDeadline}
	switch {
	case d.Serve == PolicyFlash && f.awaitingPXE():
		g := *f
		g.reach(PhasePXE, v.At)
		if v.Token != "" {
			g.TokenHash = HashCycleToken(v.Token)
		}
		m.Flash = &g
	case d.Serve == PolicyFlash || d.Serve == PolicyTUI:
		m = m.abandon(v.At, d.Serve)
		if d.Serve == PolicyTUI {
			break
		}
		g := &Flash{MAC: m.MAC, Trigger: TriggerPolicy, Image: m.Image,
			Provisioning: m.ProvisioningMode, Hostname: m.Hostname, ReadyCheck: m.ReadyCheck.Effective(m.ProvisioningMode),
			Result: FlashRunning, Phase: PhasePXE, RequestedAt: v.At.UTC(), Deadline: m.deadline(r)}
		g.seed(m)
		g.reach(PhasePXE, v.At)
		if v.Token != "" {
			g.TokenHash = HashCycleToken(v.Token)
		}
		m.Flash = g
	case f.AwaitingReady() && f.DiskAt == nil:
		g := *f
		g.reach(PhaseDisk, v.At)
		m.Flash = &g
	}
	return m
}

// abandon ends a running flash the machine left by PXE-booting into the
// live env again (a reboot before its report, or an OS that never
// passed its ready check).
func (m Machine) abandon(at time.Time, served Policy) Machine {
	if !m.Flash.Running() {
		return m
	}
	f := *m.Flash
	f.end(FlashFailed, "the machine PXE-booted again in phase "+string(f.Phase)+" and was served "+string(served), at)
	m.Flash = &f
	m.Replaced = &f
	return m
}

// reportFlash is the flash record of a report from the interactive live
// env (a cycle served tui: no flash was started at the contact), or f
// when the cycle belongs to a running flash.
func (m Machine) reportFlash(p Progress, at time.Time) *Flash {
	if m.Flash.Running() && m.Flash.DoneAt == nil {
		g := *m.Flash
		return &g
	}
	if m.LastServed != PolicyTUI || m.Cycle == nil {
		return nil
	}
	p = p.Sane()
	start := m.Cycle.StartedAt
	// bty-tui seeds no phone-home: its flash waits for a TCP port.
	rc := m.ReadyCheck.Effective(m.ProvisioningMode)
	if rc == ReadyPhoneHome {
		rc = ReadyTCP22
	}
	f := &Flash{MAC: m.MAC, Trigger: TriggerTUI, Image: p.Image, Result: FlashRunning, Phase: PhasePXE,
		Provisioning: m.ProvisioningMode, Hostname: m.Hostname, ReadyCheck: rc,
		RequestedAt: start, TokenHash: m.Cycle.TokenHash, Deadline: m.deadline(FlashRun{At: at})}
	f.seed(m)
	f.reach(PhasePXE, start)
	return f
}

// flashDone is the flash bookkeeping of a done report p at now.
func (m Machine) flashDone(p Progress, now time.Time) Machine {
	f := m.reportFlash(p, now)
	if f == nil {
		return m
	}
	f.progress(p)
	if u := p.Sane().OSUser; u != "" {
		f.OSUser = u
	}
	if f.FetchAt == nil {
		f.reach(PhaseFetch, now)
	}
	f.reach(PhaseDone, now)
	if f.ReadyCheck == ReadyNone {
		f.reach(PhaseReady, now)
		f.end(FlashReady, "", now)
	}
	m.Flash = f
	return m
}

// flashFailed is the flash bookkeeping of a failure report at now.
func (m Machine) flashFailed(reason string, now time.Time) Machine {
	f := m.reportFlash(Progress{}, now)
	if f == nil {
		return m
	}
	f.end(FlashFailed, reason, now)
	m.Flash = f
	return m
}

// AsFlashed is m with the image, provisioning mode and host name of its
// flash in progress (a demand's overrides, or the record's when the
// flash started): what its live env's script and seed carry.
func (m Machine) AsFlashed() Machine {
	if f := m.Flash; f.Running() && f.DoneAt == nil {
		m = m.FlashedWith(f)
	}
	return m
}

// FlashedWith is m with the image, provisioning mode, host name (and,
// for a reflash to known-good, the seed and workflow) flash f was made
// with.
func (m Machine) FlashedWith(f *Flash) Machine {
	m.Image, m.ProvisioningMode, m.Hostname = f.Image, f.Provisioning, f.Hostname
	if k := m.LastKnownGood; f.KnownGoodRun != 0 && k != nil && k.RunID == f.KnownGoodRun {
		m.UserData, m.MetaData, m.CijoeWorkflowRef = k.UserData, k.MetaData, k.Workflow
	}
	return m
}

// seed records the hashes of m's seed on f.
func (f *Flash) seed(m Machine) {
	f.UserDataSHA256, f.MetaDataSHA256 = SeedHash(m.UserData), SeedHash(m.MetaData)
}
