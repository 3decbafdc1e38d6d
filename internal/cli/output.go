package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"

	"github.com/btyproject/bty/internal/exitcode"
)

// SchemaVersion is the version of every --json document bty prints.
const SchemaVersion = "1"

// envelope wraps a --json document: {"schema_version", "command", ...}.
func writeJSON(w io.Writer, command string, fields map[string]any) error {
	doc := map[string]any{"schema_version": SchemaVersion, "command": command}
	for k, v := range fields {
		doc[k] = v
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}

// jsonError prints the --json document of a failed command and returns
// err unchanged, so the exit code survives.
func jsonError(w io.Writer, command string, err error, extra map[string]any) error {
	fields := map[string]any{"ok": false, "error": err.Error(), "exit_code": exitcode.Code(err)}
	for k, v := range extra {
		fields[k] = v
	}
	_ = writeJSON(w, command, fields)
	return err
}

func usageErr(format string, args ...any) error {
	return exitcode.Wrap(exitcode.Usage, fmt.Errorf(format, args...))
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
