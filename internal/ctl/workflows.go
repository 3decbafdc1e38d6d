package ctl

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/btyproject/bty/internal/exitcode"
	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/human"
)

func newWorkflowsCmd(e *env) *cobra.Command {
	return groupCmd(e, "workflows", "List, upload, fetch and delete the cijoe workflows bty-web runs",
		`The cijoe workflow files bty-web keeps for cijoe-online provisioning: a
machine whose provisioning is cijoe-online names one with bty-ctl
machines set --cijoe-workflow NAME, and once its flash is ready bty-web
runs that workflow against it over SSH (bty-ctl machines runs MAC).`,
		newWorkflowsListCmd(e), newWorkflowsUploadCmd(e), newWorkflowsGetCmd(e), newWorkflowsDeleteCmd(e))
}

// shortSHA is the first 12 hex digits of a sha256 ("-" for none).
func shortSHA(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return dash(s)
}

// checkWorkflowName checks a workflow name locally: a bad one is
// misuse (exit 2) without a round trip.
func checkWorkflowName(name string) error {
	if err := fleet.CheckWorkflowName(name); err != nil {
		return exitcode.Wrap(exitcode.Usage, err)
	}
	return nil
}

func newWorkflowsListCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the workflows bty-web keeps",
		Long: `List the workflow files bty-web keeps, by name: size, the start of the
file's sha256, modification time (local), and the machines whose
cijoe_workflow_ref names it (a workflow in use cannot be deleted).`,
		Example: `  bty-ctl workflows list
  bty-ctl workflows list --json | jq -r '.workflows[] | select(.machines == []) | .name'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			const name = "workflows-list"
			c, err := e.authClient()
			if err != nil {
				return e.fail(name, err, nil)
			}
			ws, err := c.Workflows(cmd.Context())
			if err != nil {
				return e.fail(name, e.apiErr("listing workflows", c, err), map[string]any{"server": c.Server()})
			}
			if e.asJSON {
				return writeJSON(e, name, map[string]any{"server": c.Server(), "workflows": ws})
			}
			if len(ws) == 0 {
				fmt.Fprintf(e.stderr, "no workflows on %s yet: upload one with bty-ctl workflows upload FILE\n", c.Server())
				return nil
			}
			tw := newTable(e.stdout)
			fmt.Fprintln(tw, "NAME\tSIZE\tSHA256\tMODIFIED\tMACHINES")
			for _, w := range ws {
				used := "-"
				if len(w.Machines) > 0 {
					macs := make([]string, len(w.Machines))
					for i, m := range w.Machines {
						macs[i] = m.String()
					}
					used = fmt.Sprintf("%d (%s)", len(macs), strings.Join(macs, ", "))
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", w.Name, human.BytesOr(w.Size, "-"), shortSHA(w.SHA256), localTime(&w.ModifiedAt), used)
			}
			return tw.Flush()
		},
	}
}

func newWorkflowsUploadCmd(e *env) *cobra.Command {
	var as string
	cmd := &cobra.Command{
		Use:   "upload FILE [--name NAME]",
		Short: "Upload a cijoe workflow, or replace one of the same name",
		Long: `Upload FILE to bty-web as the workflow NAME (default: the file's base
name), replacing a workflow of that name. A name is one file name of
letters, digits, '.', '_' and '-' ending in .yaml or .yml.

bty-web checks the file as cijoe reads it (YAML with a non-empty steps:
list, every step with a name: and a run: or uses:) and refuses one with
a problem, naming its line: exit 1 with its message, and nothing is
kept. A missing FILE, a bad name or a file over 1 MiB is exit 2 before
anything is sent.`,
		Example: `  bty-ctl workflows upload ./smoke.yaml
  bty-ctl workflows upload ./ci/provision.yml --name node-provision.yml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			const name = "workflows-upload"
			path := args[0]
			wname := as
			if wname == "" {
				wname = filepath.Base(path)
			}
			extra := map[string]any{"file": path, "name": wname}
			b, err := readWorkflowFile(path)
			if err != nil {
				return e.fail(name, err, extra)
			}
			if err := checkWorkflowName(wname); err != nil {
				return e.fail(name, err, extra)
			}
			c, err := e.authClient()
			if err != nil {
				return e.fail(name, err, extra)
			}
			extra["server"] = c.Server()
			w, created, err := c.PutWorkflow(cmd.Context(), wname, b)
			if err != nil {
				return e.fail(name, e.apiErr("uploading "+path+" as workflow "+wname, c, err), extra)
			}
			if e.asJSON {
				return writeJSON(e, name, map[string]any{"ok": true, "server": c.Server(), "file": path, "created": created, "workflow": w})
			}
			verb := "replaced"
			if created {
				verb = "created"
			}
			fmt.Fprintf(e.stdout, "%s workflow %s on %s: %s, sha256 %s\n", verb, w.Name, c.Server(), human.BytesOr(w.Size, "0 B"), w.SHA256)
			return nil
		},
	}
	cmd.Flags().StringVar(&as, "name", "", "name on the server (default: the file's base name)")
	return cmd
}

// readWorkflowFile reads a workflow to upload; what keeps it from being
// sent is misuse (exit 2).
func readWorkflowFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, usageErr("no file %s: give the path of the workflow file to upload", path)
	case err != nil:
		return nil, usageErr("reading %s: %v", path, err)
	case !st.Mode().IsRegular():
		return nil, usageErr("%s is not a regular file: give the path of the workflow file to upload", path)
	case st.Size() > fleet.MaxWorkflowBytes:
		return nil, usageErr("%s is %d bytes; bty-web keeps workflows of at most %d", path, st.Size(), fleet.MaxWorkflowBytes)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, usageErr("reading %s: %v", path, err)
	}
	return b, nil
}

func newWorkflowsGetCmd(e *env) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "get NAME [-o FILE]",
		Short: "Print a workflow, or save it to a file",
		Long: `Fetch the workflow NAME from bty-web and write its YAML to stdout, or
with -o to FILE (replaced if it exists). The bytes are checked against
the sha256 bty-web gives for them. An unknown NAME is exit 1; a
malformed one exit 2. --json prints the YAML in the document's "yaml"
field (or, with -o, only where it was written).`,
		Example: `  bty-ctl workflows get smoke.yaml
  bty-ctl workflows get smoke.yaml -o smoke.yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			const name = "workflows-get"
			wname := args[0]
			extra := map[string]any{"name": wname}
			if err := checkWorkflowName(wname); err != nil {
				return e.fail(name, err, extra)
			}
			c, err := e.authClient()
			if err != nil {
				return e.fail(name, err, extra)
			}
			extra["server"] = c.Server()
			b, sum, err := c.Workflow(cmd.Context(), wname)
			if err != nil {
				return e.fail(name, e.apiErr("getting workflow "+wname, c, err), extra)
			}
			if got := fleet.SHA256Hex(b); sum != "" && got != sum {
				return e.fail(name, fmt.Errorf("workflow %s: the bytes received hash to %s, the server says %s: try again", wname, got, sum), extra)
			}
			sum = fleet.SHA256Hex(b)
			if out != "" {
				if err := os.WriteFile(out, b, 0o644); err != nil {
					return e.fail(name, fmt.Errorf("writing workflow %s: %w", wname, err), extra)
				}
				if e.asJSON {
					return writeJSON(e, name, map[string]any{"ok": true, "server": c.Server(), "name": wname, "sha256": sum, "bytes": len(b), "file": out})
				}
				fmt.Fprintf(e.stderr, "wrote workflow %s to %s: %d bytes, sha256 %s\n", wname, out, len(b), sum)
				return nil
			}
			if e.asJSON {
				return writeJSON(e, name, map[string]any{"server": c.Server(), "name": wname, "sha256": sum, "bytes": len(b), "yaml": string(b)})
			}
			_, err = e.stdout.Write(b)
			return err
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "write the workflow to FILE instead of stdout")
	return cmd
}

func newWorkflowsDeleteCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a workflow no machine uses",
		Long: `Delete the workflow NAME from bty-web. A workflow that machines still
name in their cijoe_workflow_ref is refused, naming them (exit 1):
point them at another one first (bty-ctl machines set MAC
--cijoe-workflow NAME). An unknown NAME is exit 1; a malformed one
exit 2.`,
		Example: `  bty-ctl workflows delete old-smoke.yaml`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			const name = "workflows-delete"
			wname := args[0]
			extra := map[string]any{"name": wname}
			if err := checkWorkflowName(wname); err != nil {
				return e.fail(name, err, extra)
			}
			c, err := e.authClient()
			if err != nil {
				return e.fail(name, err, extra)
			}
			extra["server"] = c.Server()
			if err := c.DeleteWorkflow(cmd.Context(), wname); err != nil {
				return e.fail(name, e.apiErr("deleting workflow "+wname, c, err), extra)
			}
			if e.asJSON {
				return writeJSON(e, name, map[string]any{"ok": true, "server": c.Server(), "name": wname})
			}
			fmt.Fprintf(e.stdout, "deleted workflow %s\n", wname)
			return nil
		},
	}
}
