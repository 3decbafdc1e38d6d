package fleet

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// cijoe-online (docs/reference.md, "cijoe-online"): bty-web keeps
// workflow files, runs a machine's workflow over SSH once a flash in
// that mode is ready, keeps every run, and records a successful run as
// the machine's known-good baseline.

// MaxWorkflowBytes caps a workflow file.
const MaxWorkflowBytes = 1 << 20

// Workflow is a workflow file bty-web keeps (GET /workflows).
type Workflow struct {
	Name       string    `json:"name"`
	Size       int64     `json:"size"`
	SHA256     string    `json:"sha256"`
	ModifiedAt time.Time `json:"modified_at"`
	// Machines are the records whose cijoe_workflow_ref names it.
	Machines []MAC `json:"machines"`
}

// CheckWorkflowName checks a workflow's name: one path element of
// letters, digits, '.', '_' and '-', not starting with '.', ending in
// .yaml or .yml, at most MaxNameBytes.
func CheckWorkflowName(name string) error {
	switch {
	case name == "":
		return errors.New("a workflow needs a name, like provision.yaml")
	case len(name) > MaxNameBytes:
		return fmt.Errorf("workflow name is %d bytes; the limit is %d", len(name), MaxNameBytes)
	case name[0] == '.':
		return fmt.Errorf("workflow name %q starts with a dot: give a plain file name like provision.yaml", truncate(name, 64))
	case strings.Trim(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "":
		return fmt.Errorf("workflow name %q: use only letters, digits, '.', '_' and '-' (one file name, no directory)", truncate(name, 64))
	case !strings.HasSuffix(name, ".yaml") && !strings.HasSuffix(name, ".yml"):
		return fmt.Errorf("workflow name %q: end it in .yaml or .yml, as cijoe expects", truncate(name, 64))
	}
	return nil
}

// WorkflowError is a workflow file that cijoe would refuse, at a line
// (0: the file as a whole).
type WorkflowError struct {
	Line int
	Msg  string
}

func (e *WorkflowError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
	}
	return e.Msg
}

// CheckWorkflow checks a cijoe workflow file: YAML whose top level is a
// mapping with a non-empty "steps" list, every step a mapping with a
// non-empty "name" and a "run" (a shell script) or "uses" (a cijoe
// script). It returns a *WorkflowError naming the line of the first
// problem.
func CheckWorkflow(b []byte) error {
	if len(b) > MaxWorkflowBytes {
		return &WorkflowError{Msg: fmt.Sprintf("the workflow is %d bytes; the limit is %d", len(b), MaxWorkflowBytes)}
	}
	if strings.TrimSpace(string(b)) == "" {
		return &WorkflowError{Msg: "the workflow is empty: it needs a steps: list"}
	}
	f, err := parser.ParseBytes(b, 0)
	if err != nil {
		return yamlError(err)
	}
	if len(f.Docs) != 1 || f.Docs[0] == nil || f.Docs[0].Body == nil {
		return &WorkflowError{Msg: "a workflow is one YAML document with a steps: list"}
	}
	top, ok := unwrap(f.Docs[0].Body).(*ast.MappingNode)
	if !ok {
		return &WorkflowError{Line: line(f.Docs[0].Body), Msg: "the workflow is not a mapping of keys (doc:, steps:)"}
	}
	var steps ast.Node
	for _, kv := range top.Values {
		if kv.Key.String() == "steps" {
			steps = unwrap(kv.Value)
		}
	}
	if steps == nil {
		return &WorkflowError{Line: line(top), Msg: "the workflow has no steps: list"}
	}
	seq, ok := steps.(*ast.SequenceNode)
	if !ok || len(seq.Values) == 0 {
		return &WorkflowError{Line: line(steps), Msg: "steps: must be a non-empty list of steps (- name: ..., run: ...)"}
	}
	names := map[string]int{}
	for i, v := range seq.Values {
		step, ok := unwrap(v).(*ast.MappingNode)
		if !ok {
			return &WorkflowError{Line: line(v), Msg: fmt.Sprintf("step %d is not a mapping (name:, run: or uses:)", i+1)}
		}
		var name string
		var hasRun bool
		for _, kv := range step.Values {
			val := unwrap(kv.Value)
			switch kv.Key.String() {
			case "name":
				s, ok := val.(*ast.StringNode)
				if !ok {
					if val != nil {
						name = strings.TrimSpace(val.String())
					}
				} else {
					name = strings.TrimSpace(s.Value)
				}
			case "run", "uses":
				if val != nil && strings.TrimSpace(scalar(val)) != "" {
					hasRun = true
				}
			}
		}
		switch {
		case name == "":
			return &WorkflowError{Line: line(step), Msg: fmt.Sprintf("step %d has no name:", i+1)}
		case !hasRun:
			return &WorkflowError{Line: line(step), Msg: fmt.Sprintf("step %q has neither run: nor uses:", name)}
		case names[name] != 0:
			return &WorkflowError{Line: line(step), Msg: fmt.Sprintf("step name %q is used twice (also at line %d)", name, names[name])}
		}
		names[name] = line(step)
	}
	return nil
}

// unwrap is n without tags and anchors.
func unwrap(n ast.Node) ast.Node {
	for {
		switch v := n.(type) {
		case *ast.TagNode:
			n = v.Value
		case *ast.AnchorNode:
			n = v.Value
		default:
			return n
		}
	}
}

func scalar(n ast.Node) string {
	switch v := n.(type) {
	case *ast.StringNode:
		return v.Value
	case *ast.LiteralNode:
		return v.Value.Value
	case *ast.NullNode:
		return ""
	}
	return n.String()
}

func line(n ast.Node) int {
	if n == nil || n.GetToken() == nil || n.GetToken().Position == nil {
		return 0
	}
	return n.GetToken().Position.Line
}

// yamlError is a parse error as a *WorkflowError with its line.
func yamlError(err error) error {
	msg := err.Error()
	ln := 0
	if _, rest, ok := strings.Cut(msg, "["); ok {
		if n, _, ok := strings.Cut(rest, ":"); ok {
			_, _ = fmt.Sscanf(n, "%d", &ln)
		}
	}
	// goccy's message is "[L:C] what" followed by a source excerpt.
	first, _, _ := strings.Cut(msg, "\n")
	if _, what, ok := strings.Cut(first, "] "); ok {
		first = what
	}
	return &WorkflowError{Line: ln, Msg: "not valid YAML: " + first}
}

// SHA256Hex is the hex sha256 of b.
func SHA256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// RunResult is where a workflow run ended, or RunRunning.
type RunResult string

// The run results.
const (
	RunQueued      RunResult = "queued"      // waiting for a free slot (BTY_MAX_RUNS)
	RunRunning     RunResult = "running"     // cijoe is running
	RunSuccess     RunResult = "success"     // cijoe exited 0
	RunFailed      RunResult = "failed"      // cijoe exited non-zero, or could not start
	RunTimeout     RunResult = "timeout"     // the machine's cijoe_timeout passed
	RunCancelled   RunResult = "cancelled"   // an operator cancelled it
	RunInterrupted RunResult = "interrupted" // bty-web stopped while it ran
)

// RunResults lists the results.
var RunResults = []RunResult{RunQueued, RunRunning, RunSuccess, RunFailed, RunTimeout, RunCancelled, RunInterrupted}

// Ended reports whether r is a final result.
func (r RunResult) Ended() bool { return r != RunQueued && r != RunRunning && r != "" }

// RunSource says where a run ran.
type RunSource string

// The run sources.
const (
	RunOnline  RunSource = "online"  // bty-web over SSH after a cijoe-online flash
	RunOffline RunSource = "offline" // bty-tui's cijoe on the flashed disk, log uploaded
)

// Run is one workflow run of a machine (GET /machines/{mac}/runs).
type Run struct {
	ID     int64     `json:"id"`
	MAC    MAC       `json:"mac"`
	Source RunSource `json:"source"`
	// FlashID is the flash the run followed (0: none recorded).
	FlashID        int64  `json:"flash_id"`
	Workflow       string `json:"workflow"`
	WorkflowSHA256 string `json:"workflow_sha256"`
	Image          string `json:"image"`
	ImageSHA256    string `json:"image_sha256"`
	// UserDataSHA256 and MetaDataSHA256 are the hashes of the record's
	// seed the flash was made with ("" when it had none).
	UserDataSHA256 string `json:"user_data_sha256"`
	MetaDataSHA256 string `json:"meta_data_sha256"`
	// Address and User are the SSH target (host:port) and login.
	Address   string     `json:"address"`
	User      string     `json:"user"`
	Result    RunResult  `json:"result"`
	Reason    string     `json:"reason"`
	CreatedAt time.Time  `json:"created_at"`
	StartedAt *time.Time `json:"started_at"`
	EndedAt   *time.Time `json:"ended_at"`
	// ExitStatus is cijoe's exit status (null when it did not exit).
	ExitStatus *int `json:"exit_status"`
	// Report says whether cijoe wrote cijoe-output/report.html.
	Report bool `json:"report"`
	// KnownGood says whether the run became the machine's baseline.
	KnownGood bool `json:"known_good"`
}

// Running reports whether r has not ended.
func (r *Run) Running() bool { return r != nil && !r.Result.Ended() }

// End is r ended with res at at (exit nil: cijoe did not exit).
func (r Run) End(res RunResult, reason string, exit *int, at time.Time) Run {
	at = at.UTC()
	r.Result, r.Reason, r.ExitStatus, r.EndedAt = res, cut(reason), exit, &at
	return r
}

func cut(s string) string {
	if len([]rune(s)) > MaxFailureLen {
		return string([]rune(s)[:MaxFailureLen])
	}
	return s
}

// KnownGood is a machine's known-good baseline (last_known_good): what
// a successful workflow run was made with.
type KnownGood struct {
	Image          string    `json:"image"`
	ImageSHA256    string    `json:"image_sha256"`
	Hostname       string    `json:"hostname"`
	UserDataSHA256 string    `json:"user_data_sha256"`
	MetaDataSHA256 string    `json:"meta_data_sha256"`
	Workflow       string    `json:"workflow"`
	WorkflowSHA256 string    `json:"workflow_sha256"`
	RunID          int64     `json:"run_id"`
	At             time.Time `json:"at"`
	// UserData and MetaData are the seed itself, which a reflash to the
	// known-good restores (secrets may be in them: never on open
	// routes).
	UserData string `json:"user_data"`
	MetaData string `json:"meta_data"`
}

// UnmarshalJSON also reads the string older bty-web versions kept in
// last_known_good (an image name the operator picked).
func (k *KnownGood) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*k = KnownGood{Image: s}
		return nil
	}
	type plain KnownGood
	return json.Unmarshal(b, (*plain)(k))
}

// IsZero reports whether k records nothing.
func (k *KnownGood) IsZero() bool { return k == nil || *k == KnownGood{} }

// SeedHash is the hash a baseline keeps of a seed ("" for none).
func SeedHash(s string) string {
	if s == "" {
		return ""
	}
	return SHA256Hex([]byte(s))
}

// Baseline is the known-good a successful run r of m records.
func (m Machine) Baseline(r Run, userData, metaData string, at time.Time) *KnownGood {
	return &KnownGood{Image: r.Image, ImageSHA256: r.ImageSHA256, Hostname: m.Hostname,
		UserDataSHA256: r.UserDataSHA256, MetaDataSHA256: r.MetaDataSHA256,
		Workflow: r.Workflow, WorkflowSHA256: r.WorkflowSHA256, RunID: r.ID, At: at.UTC(),
		UserData: userData, MetaData: metaData}
}

// DriftItem is one way a record no longer matches its baseline.
type DriftItem struct {
	Field    string `json:"field"`
	Baseline string `json:"baseline"`
	Now      string `json:"now"`
}

// DriftFrom lists how m's record differs from its known-good baseline:
// its image (by name, or by content when imageSHA256, the catalog's
// sha256 of the record's image, is known and differs), its seed, its
// workflow (by name, or by content when workflowSHA256 is known). Nil
// when there is no baseline or nothing differs.
func (m Machine) DriftFrom(imageSHA256, workflowSHA256 string) []DriftItem {
	k := m.LastKnownGood
	if k.IsZero() || k.RunID == 0 {
		return nil
	}
	var d []DriftItem
	add := func(field, base, now string) { d = append(d, DriftItem{Field: field, Baseline: base, Now: now}) }
	switch {
	case m.Image != k.Image:
		add("image", k.Image, m.Image)
	case imageSHA256 != "" && k.ImageSHA256 != "" && imageSHA256 != k.ImageSHA256:
		add("image_sha256", k.ImageSHA256, imageSHA256)
	}
	if h := SeedHash(m.UserData); h != k.UserDataSHA256 {
		add("user_data", k.UserDataSHA256, h)
	}
	if h := SeedHash(m.MetaData); h != k.MetaDataSHA256 {
		add("meta_data", k.MetaDataSHA256, h)
	}
	switch {
	case m.CijoeWorkflowRef != k.Workflow:
		add("workflow", k.Workflow, m.CijoeWorkflowRef)
	case workflowSHA256 != "" && workflowSHA256 != k.WorkflowSHA256:
		add("workflow_sha256", k.WorkflowSHA256, workflowSHA256)
	}
	return d
}

// DefaultWorkflowTimeout is how long a run may take when the record
// sets no cijoe_timeout.
const DefaultWorkflowTimeout = 30 * time.Minute

// The bounds of cijoe_timeout.
const (
	MinWorkflowTimeout = time.Minute
	MaxWorkflowTimeout = 24 * time.Hour
)

// ParseWorkflowTimeout is s ("45m", "2h") as a duration within
// MinWorkflowTimeout and MaxWorkflowTimeout; "" is 0 (the default).
func ParseWorkflowTimeout(s string) (time.Duration, error) {
	return parseBounded("cijoe_timeout", s, MinWorkflowTimeout, MaxWorkflowTimeout, fmt.Sprintf("like 30m or 2h (empty: %v)", DefaultWorkflowTimeout))
}

// WorkflowTimeout is the machine's run timeout.
func (m Machine) WorkflowTimeout() time.Duration {
	if d, err := ParseWorkflowTimeout(m.CijoeTimeout); err == nil && d > 0 {
		return d
	}
	return DefaultWorkflowTimeout
}

// validUser reports whether s is "" or a login name a run can use.
func validUser(s string) bool {
	if s == "" {
		return true
	}
	if len(s) > 32 || s[0] == '-' || s[0] == '.' {
		return false
	}
	return strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == ""
}

// SSHUser is who a run logs in as: the record's cijoe_ssh_user, else
// the default user the live env found in the flashed image's
// cloud-init configuration (the flash's os_user), else root.
func (m Machine) SSHUser(f *Flash) string {
	switch {
	case m.CijoeSSHUser != "":
		return m.CijoeSSHUser
	case f != nil && f.OSUser != "":
		return f.OSUser
	}
	return "root"
}

// SSHPort is the port a run connects to: the record's cijoe_ssh_port,
// else 22.
func (m Machine) SSHPort() int {
	if m.CijoeSSHPort > 0 {
		return m.CijoeSSHPort
	}
	return 22
}

// WithRun is m after a change of its run r at now: the record's
// last_workflow_* fields follow its latest run (dir: the run's
// directory on the server), and a run that became known-good is its
// baseline (seeds: the seed the run's flash was made with).
func (m Machine) WithRun(r Run, dir, userData, metaData string, now time.Time) Machine {
	at := r.CreatedAt
	if r.StartedAt != nil {
		at = *r.StartedAt
	}
	st := WorkflowFailed
	switch {
	case !r.Result.Ended():
		st = WorkflowRunning
	case r.Result == RunSuccess:
		st = WorkflowSuccess
	}
	m.LastWorkflowRunAt, m.LastWorkflowStatus, m.LastWorkflowOutputPath = &at, &st, dir
	if r.KnownGood {
		m.LastKnownGood = m.Baseline(r, userData, metaData, now)
	}
	m.UpdatedAt = now.UTC()
	return m
}

// check bounds an imported baseline's fields.
func (k *KnownGood) check() error {
	for _, f := range []struct{ name, v string }{{"image", k.Image}, {"workflow", k.Workflow}} {
		if len(f.v) > MaxNameBytes || strings.ContainsAny(f.v, "/\x00\r\n") {
			return fmt.Errorf("%s %q is not a name", f.name, truncate(f.v, 64))
		}
	}
	if len(k.Hostname) > MaxHostnameBytes {
		return errors.New("hostname is too long")
	}
	for _, h := range []string{k.ImageSHA256, k.UserDataSHA256, k.MetaDataSHA256, k.WorkflowSHA256} {
		if h != "" && (len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "") {
			return fmt.Errorf("%q is not a sha256", truncate(h, 80))
		}
	}
	if len(k.UserData) > MaxSeedBytes || len(k.MetaData) > MaxSeedBytes {
		return fmt.Errorf("a seed is over %d bytes", MaxSeedBytes)
	}
	return nil
}
