package ctl

import (
	"encoding/json"
	"io"
	"text/tabwriter"
	"time"

	"github.com/btyproject/bty/internal/cmdrun"
	"github.com/btyproject/bty/internal/exitcode"
)

// SchemaVersion is the version of every --json document (the same
// envelope as bty's).
const SchemaVersion = "1"

// writeJSON prints {"schema_version", "command", ...fields} on stdout.
func writeJSON(e *env, command string, fields map[string]any) error {
	doc := map[string]any{"schema_version": SchemaVersion, "command": command}
	for k, v := range fields {
		doc[k] = v
	}
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}

// jsonError prints the --json document of a failed command and returns
// err marked as reported, so the exit code survives and nothing is
// printed twice.
func jsonError(e *env, command string, err error, extra map[string]any) error {
	fields := map[string]any{"ok": false, "error": err.Error(), "exit_code": exitcode.Code(err)}
	for k, v := range extra {
		fields[k] = v
	}
	_ = writeJSON(e, command, fields)
	return cmdrun.Reported(err)
}

// fail reports err the way the output mode wants: as a --json document,
// or returned for Run to print on stderr.
func (e *env) fail(command string, err error, extra map[string]any) error {
	if e.asJSON {
		return jsonError(e, command, err, extra)
	}
	return err
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

// localTime formats t in the local time zone; "-" for nil or zero.
func localTime(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
