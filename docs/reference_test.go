// Package docs holds no code: its test keeps reference.md true. It runs
// every program's --help in-process, asks bty-web for its routes (and
// whether each needs a session), reflects on internal/api's wire types
// and reads the repository's Go files for the environment variables
// they read, and compares each with what reference.md lists, both ways.
package docs

import (
	"bytes"
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/cli"
	"github.com/btyproject/bty/internal/ctl"
	"github.com/btyproject/bty/internal/media"
	"github.com/btyproject/bty/internal/server"
	"github.com/btyproject/bty/internal/store/sqlitestore"
	"github.com/btyproject/bty/internal/tui"
)

const reference = "reference.md"

// programs are the entry points cmd/* call, by program name.
var programs = map[string]func(ctx context.Context, args []string, stdout, stderr io.Writer) int{
	"bty": func(ctx context.Context, args []string, stdout, stderr io.Writer) int {
		return cli.Run(ctx, args, strings.NewReader(""), stdout, stderr)
	},
	"bty-tui": func(ctx context.Context, args []string, stdout, stderr io.Writer) int {
		return tui.Main(ctx, args, strings.NewReader(""), stdout, stderr)
	},
	"bty-web": func(ctx context.Context, args []string, stdout, stderr io.Writer) int {
		return server.Main(ctx, args, strings.NewReader(""), stdout, stderr)
	},
	"bty-ctl": func(ctx context.Context, args []string, stdout, stderr io.Writer) int {
		return ctl.Run(ctx, args, strings.NewReader(""), stdout, stderr)
	},
	"bty-media": media.Run,
}

// cobraCommands are the commands cobra adds to every program with
// subcommands; reference.md describes them once, under "Commands".
var cobraCommands = []string{"help", "completion"}

// TestReferenceCommands compares every (program, command, flag) the
// programs' --help shows with the ones reference.md lists under
// "Commands", both ways, and checks the hidden flags it lists are
// hidden and accepted.
func TestReferenceCommands(t *testing.T) {
	doc := readDoc(t)
	documented := parseCommands(t, doc)

	actual := map[string]*helpPage{} // by command path, "bty list disks"
	for prog := range programs {
		walkHelp(t, prog, nil, actual)
	}

	var problems []string
	for _, path := range sortedKeys(actual) {
		if _, ok := documented[path]; !ok {
			problems = append(problems, fmt.Sprintf("command %q: in its --help, not in %s", path, reference))
		}
	}
	for _, path := range sortedKeys(documented) {
		if _, ok := actual[path]; !ok {
			problems = append(problems, fmt.Sprintf("command %q: in %s, no such command", path, reference))
		}
	}
	for _, path := range sortedKeys(actual) {
		dc, ok := documented[path]
		if !ok {
			continue
		}
		shown := actual[path].flags
		want := dc.expected(documented)
		for _, f := range sortedKeys(shown) {
			if !want[f] {
				problems = append(problems, fmt.Sprintf("flag %s %s: in its --help, not in %s", path, f, reference))
			}
		}
		for _, f := range sortedKeys(want) {
			if !shown[f] {
				problems = append(problems, fmt.Sprintf("flag %s %s: in %s, not in its --help", path, f, reference))
			}
		}
		for _, h := range dc.hidden {
			if shown[h.name] {
				problems = append(problems, fmt.Sprintf("flag %s %s: %s lists it as hidden, its --help shows it", path, h.name, reference))
				continue
			}
			// Flags are parsed before --help is acted on: an unknown
			// one is an error, a known one leaves the help alone.
			args := append(strings.Fields(path)[1:], h.long())
			if h.arg != "" {
				args = append(args, "1")
			}
			if code, _, stderr := runProgram(strings.Fields(path)[0], append(args, "--help")...); code != 0 {
				problems = append(problems, fmt.Sprintf("flag %s %s: %s lists it as hidden, the command refuses it (exit %d: %s)", path, h.name, reference, code, strings.TrimSpace(stderr)))
			}
		}
	}
	for _, p := range problems {
		t.Error(p)
	}
	if len(problems) == 0 {
		n := 0
		for _, p := range actual {
			n += len(p.flags)
		}
		t.Logf("%d commands and %d command flags agree with %s", len(actual), n, reference)
	}
}

// helpPage is what one command's --help lists.
type helpPage struct {
	subcommands []string
	// flags are "--name" or "-s, --name", from "Flags:" and "Global
	// Flags:", without --help, which every command has.
	flags map[string]bool
}

func runProgram(prog string, args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := programs[prog](context.Background(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

var flagLine = regexp.MustCompile(`^\s+(-[A-Za-z0-9], )?(--[A-Za-z0-9][A-Za-z0-9-]*)\b`)

// walkHelp reads prog's --help for the command path words, and its
// subcommands' recursively, into pages.
func walkHelp(t *testing.T, prog string, words []string, pages map[string]*helpPage) {
	t.Helper()
	path := strings.Join(append([]string{prog}, words...), " ")
	code, stdout, stderr := runProgram(prog, append(slices.Clone(words), "--help")...)
	if code != 0 {
		t.Fatalf("%s --help: exit %d, stderr: %s", path, code, stderr)
	}
	p := &helpPage{flags: map[string]bool{}}
	section := ""
	for _, line := range strings.Split(stdout, "\n") {
		switch {
		case line == "":
			section = ""
		case !strings.HasPrefix(line, " ") && strings.HasSuffix(line, ":"):
			section = line
		case section == "Available Commands:":
			p.subcommands = append(p.subcommands, strings.Fields(line)[0])
		case section == "Flags:" || section == "Global Flags:":
			m := flagLine.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("%s --help: cannot read the flag line %q", path, line)
			}
			if m[2] != "--help" {
				p.flags[m[1]+m[2]] = true
			}
		}
	}
	if len(p.flags) == 0 && len(p.subcommands) == 0 && !strings.Contains(stdout, "Usage:") {
		t.Fatalf("%s --help printed no help:\n%s", path, stdout)
	}
	pages[path] = p
	for _, sub := range p.subcommands {
		if slices.Contains(cobraCommands, sub) {
			continue
		}
		walkHelp(t, prog, append(slices.Clone(words), sub), pages)
	}
}

// docCommand is one command's heading in reference.md and its tables.
type docCommand struct {
	path   string
	flags  []docFlag // "flag" tables
	global []docFlag // "global flag": this command's and its subcommands'
	hidden []docFlag // "hidden flag": accepted, not in --help
}

type docFlag struct {
	name string // "--name" or "-s, --name"
	arg  string // "" for a boolean flag
}

func (f docFlag) long() string { return f.name[strings.Index(f.name, "--"):] }

// expected is the flags --help should show for c: its own and its
// ancestors' global ones.
func (c *docCommand) expected(all map[string]*docCommand) map[string]bool {
	want := map[string]bool{}
	for _, f := range append(slices.Clone(c.flags), c.global...) {
		want[f.name] = true
	}
	words := strings.Fields(c.path)
	for i := len(words) - 1; i >= 1; i-- {
		if a, ok := all[strings.Join(words[:i], " ")]; ok {
			for _, f := range a.global {
				want[f.name] = true
			}
		}
	}
	return want
}

var (
	commandHeading = regexp.MustCompile("^#{3,4} `(bty(?:-[a-z]+)?(?: [a-z][a-z-]*)*)`$")
	docFlagName    = regexp.MustCompile("^`((?:-[A-Za-z0-9], )?--[A-Za-z0-9][A-Za-z0-9-]*)`$")
)

// parseCommands reads reference.md's "Commands" section: a heading
// "### `PROGRAM COMMAND...`" per command, followed by tables whose first
// column is "flag", "global flag" or "hidden flag" (then argument,
// default, meaning).
func parseCommands(t *testing.T, doc string) map[string]*docCommand {
	t.Helper()
	cmds := map[string]*docCommand{}
	var cur *docCommand
	var table string // the first header cell of the table being read
	for i, line := range strings.Split(section(t, doc, "## Commands"), "\n") {
		if strings.HasPrefix(line, "#") {
			cur, table = nil, ""
			if m := commandHeading.FindStringSubmatch(line); m != nil {
				if cmds[m[1]] != nil {
					t.Errorf("%s: command %q has two headings", reference, m[1])
				}
				cur = &docCommand{path: m[1]}
				cmds[m[1]] = cur
			}
			continue
		}
		if !strings.HasPrefix(line, "|") {
			table = ""
			continue
		}
		cells := tableCells(line)
		switch {
		case table == "" && cur == nil:
			t.Errorf("%s, Commands, line %d: a table outside a command's heading", reference, i+1)
			table = "-"
		case table == "":
			table = cells[0]
			if table != "flag" && table != "global flag" && table != "hidden flag" {
				t.Errorf("%s, %s: a table whose first column is %q, not flag, global flag or hidden flag", reference, cur.path, table)
			}
		case strings.Trim(cells[0], "-") == "":
			// The header's separator row.
		case cur != nil:
			m := docFlagName.FindStringSubmatch(cells[0])
			if m == nil || len(cells) < 4 {
				t.Errorf("%s, %s: cannot read the flag row %q (want | `--name` | ARG | default | meaning |)", reference, cur.path, line)
				continue
			}
			f := docFlag{name: m[1], arg: strings.Trim(cells[1], "`")}
			switch table {
			case "flag":
				cur.flags = append(cur.flags, f)
			case "global flag":
				cur.global = append(cur.global, f)
			case "hidden flag":
				cur.hidden = append(cur.hidden, f)
			}
		}
	}
	if len(cmds) == 0 {
		t.Fatalf("%s: no command headings under ## Commands", reference)
	}
	return cmds
}

// TestReferenceRoutes compares the routes bty-web registers with the
// ones reference.md lists under "Routes", and checks each route listed
// as needing a session refuses a request without one.
func TestReferenceRoutes(t *testing.T) {
	doc := readDoc(t)
	type docRoute struct{ pattern, access string }
	var listed []docRoute
	seen := map[string]bool{}
	for _, line := range strings.Split(section(t, doc, "### Routes"), "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := tableCells(line)
		if len(cells) < 3 {
			t.Errorf("%s, Routes: cannot read the row %q (want | `METHOD /path` | open or session | answer |)", reference, line)
			continue
		}
		r := docRoute{pattern: strings.Trim(cells[0], "`"), access: cells[1]}
		if r.access != "open" && r.access != "session" {
			t.Errorf("%s, Routes, %s: access %q, want open or session", reference, r.pattern, r.access)
		}
		if seen[r.pattern] {
			t.Errorf("%s, Routes: %s listed twice", reference, r.pattern)
		}
		seen[r.pattern] = true
		listed = append(listed, r)
	}

	st, err := sqlitestore.Open(context.Background(), filepath.Join(t.TempDir(), "state.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv := server.New(server.Config{ImageRoot: t.TempDir(), BootDir: t.TempDir(), StateDir: t.TempDir()}, st, nil, nil)
	defer srv.Close()
	registered := srv.Routes()
	for _, p := range registered {
		if !seen[p] {
			t.Errorf("route %q: registered by bty-web, not in %s", p, reference)
		}
	}
	for _, r := range listed {
		if !slices.Contains(registered, r.pattern) {
			t.Errorf("route %q: in %s, not registered by bty-web", r.pattern, reference)
		}
	}

	// A request without a session to a route that needs one is refused
	// before its handler runs: 401 from the API, a redirect to the login
	// page from the browser UI. An open GET route is not.
	h := srv.Handler()
	for _, r := range listed {
		method, path, ok := strings.Cut(r.pattern, " ")
		if !ok {
			if r.access == "session" {
				t.Errorf("route %q: listed as needing a session, has no method", r.pattern)
			}
			continue
		}
		if r.access == "open" && method != http.MethodGet {
			continue // a POST may answer 401 for its own reasons (a wrong password)
		}
		path = strings.NewReplacer("{mac}", "52:54:00:12:34:56", "{name}", "x.img", "{$}", "").Replace(path)
		req := httptest.NewRequest(method, path, nil)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		refused := w.Code == http.StatusUnauthorized ||
			(w.Code/100 == 3 && strings.HasPrefix(w.Header().Get("Location"), "/ui/login"))
		if refused != (r.access == "session") {
			t.Errorf("route %q: %s says access is %s; %s %s without a session got %d (Location %q)",
				r.pattern, reference, r.access, method, path, w.Code, w.Header().Get("Location"))
		}
	}
	if !t.Failed() {
		t.Logf("%d routes agree with %s", len(registered), reference)
	}
}

// wireTypes are internal/api's types, by name.
var wireTypes = map[string]any{
	"Machine": api.Machine{}, "MachineUpdate": api.MachineUpdate{}, "MachineEvent": api.MachineEvent{},
	"FailureReport": api.FailureReport{}, "ReportStatus": api.ReportStatus{}, "Power": api.Power{}, "PowerUpdate": api.PowerUpdate{},
	"PowerRequest": api.PowerRequest{}, "PowerResult": api.PowerResult{}, "Image": api.Image{}, "ChunkStore": api.ChunkStore{}, "BootFile": api.BootFile{},
	"BootUpload": api.BootUpload{}, "LoginRequest": api.LoginRequest{}, "Session": api.Session{},
	"Revoked": api.Revoked{}, "Settings": api.Settings{}, "ProxyDHCPStatus": api.ProxyDHCPStatus{},
	"Interface": api.Interface{}, "SettingsUpdate": api.SettingsUpdate{}, "Version": api.Version{},
	"Health": api.Health{}, "StateArchive": api.StateArchive{}, "Imported": api.Imported{},
	"Error": api.Error{}, "Flash": api.Flash{}, "ReflashRequest": api.ReflashRequest{}, "Progress": api.Progress{},
	"ReflashResult": api.ReflashResult{}, "FlashPage": api.FlashPage{}, "ArchiveSecrets": api.ArchiveSecrets{},
	"Workflow": api.Workflow{}, "Run": api.Run{}, "RunPage": api.RunPage{}, "KnownGood": api.KnownGood{}, "DriftItem": api.DriftItem{},
	"Action": api.Action{}, "ActionPage": api.ActionPage{}, "BulkRequest": api.BulkRequest{}, "BulkResult": api.BulkResult{}, "BulkItem": api.BulkItem{},
	"Schedule": api.Schedule{}, "ScheduleOccurrence": api.ScheduleOccurrence{}, "ScheduleMachine": api.ScheduleMachine{}, "ScheduleUpdate": api.ScheduleUpdate{},
	"Rollout": api.Rollout{}, "RolloutMachine": api.RolloutMachine{}, "RolloutRequest": api.RolloutRequest{},
	"Inventory": api.Inventory{}, "NIC": api.NIC{}, "InventoryDisk": api.InventoryDisk{}, "PCIDevice": api.PCIDevice{},
}

// TestReferenceWireTypes compares the types internal/api declares and
// their JSON fields with reference.md's "Wire types": a heading
// "#### Name" per type and a table of its fields.
func TestReferenceWireTypes(t *testing.T) {
	doc := readDoc(t)
	listed := map[string][]string{}
	var cur string
	for _, line := range strings.Split(section(t, doc, "### Wire types"), "\n") {
		if name, ok := strings.CutPrefix(line, "#### "); ok {
			cur = name
			if _, dup := listed[cur]; dup {
				t.Errorf("%s, Wire types: %s listed twice", reference, cur)
			}
			listed[cur] = []string{}
			continue
		}
		if cur != "" && strings.HasPrefix(line, "| `") {
			listed[cur] = append(listed[cur], strings.Trim(tableCells(line)[0], "`"))
		}
	}

	// The types api.go declares, read from its source so a new one
	// cannot be missed.
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join("..", "internal", "api", "api.go"), nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	var declared []string
	for _, d := range f.Decls {
		if g, ok := d.(*ast.GenDecl); ok && g.Tok == token.TYPE {
			for _, spec := range g.Specs {
				if ts := spec.(*ast.TypeSpec); ts.Name.IsExported() {
					declared = append(declared, ts.Name.Name)
				}
			}
		}
	}
	for _, name := range declared {
		if _, ok := listed[name]; !ok {
			t.Errorf("wire type %s: declared in internal/api, not in %s", name, reference)
		}
		if _, ok := wireTypes[name]; !ok {
			t.Errorf("wire type %s: declared in internal/api, missing from wireTypes in this test", name)
		}
	}
	for _, name := range sortedKeys(listed) {
		if !slices.Contains(declared, name) {
			t.Errorf("wire type %s: in %s, not declared in internal/api", name, reference)
			continue
		}
		v, ok := wireTypes[name]
		if !ok {
			continue
		}
		var fields []string
		rt := reflect.TypeOf(v)
		for i := range rt.NumField() {
			sf := rt.Field(i)
			if !sf.IsExported() {
				continue
			}
			tag, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
			if tag == "-" {
				continue
			}
			if tag == "" {
				tag = sf.Name
			}
			fields = append(fields, tag)
		}
		for _, fld := range fields {
			if !slices.Contains(listed[name], fld) {
				t.Errorf("wire type %s: field %q in the code, not in %s", name, fld, reference)
			}
		}
		for _, fld := range listed[name] {
			if !slices.Contains(fields, fld) {
				t.Errorf("wire type %s: field %q in %s, not in the code", name, fld, reference)
			}
		}
	}
	if !t.Failed() {
		t.Logf("%d wire types agree with %s", len(declared), reference)
	}
}

// TestReferenceEnvironment compares the environment variables the
// repository's Go code reads with reference.md's "Environment" table
// (programs) and "Test environment" table (tests and test helpers).
func TestReferenceEnvironment(t *testing.T) {
	doc := readDoc(t)
	listed := envNames(t, section(t, doc, "## Environment"))
	listedTest := envNames(t, section(t, doc, "## Test environment"))

	read, readTest := envReads(t, "..")
	for v := range read {
		delete(readTest, v)
	}
	// Tests extend or look into these; they configure nothing.
	delete(readTest, "PATH")
	delete(readTest, "TMPDIR")

	compare := func(what string, code map[string][]string, doc map[string]bool) {
		for _, v := range sortedKeys(code) {
			if !doc[v] {
				t.Errorf("%s %s: read at %s, not in %s", what, v, strings.Join(code[v], ", "), reference)
			}
		}
		for _, v := range sortedKeys(doc) {
			if code[v] == nil {
				t.Errorf("%s %s: in %s, read nowhere", what, v, reference)
			}
		}
	}
	compare("environment variable", read, listed)
	compare("test environment variable", readTest, listedTest)
	if !t.Failed() {
		t.Logf("%d environment variables and %d test ones agree with %s", len(read), len(readTest), reference)
	}
}

var envName = regexp.MustCompile("^[A-Z][A-Z0-9_]*$")

// envNames are the backquoted names in the first column of a section's
// tables.
func envNames(t *testing.T, s string) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	for _, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		for _, part := range strings.Split(tableCells(line)[0], ",") {
			n := strings.Trim(strings.TrimSpace(part), "`")
			if !envName.MatchString(n) {
				t.Errorf("%s: %q in an environment table is not a variable name", reference, part)
				continue
			}
			names[n] = true
		}
	}
	if len(names) == 0 {
		t.Fatalf("%s: no variables in the section", reference)
	}
	return names
}

// envReads finds the environment variables Go code under root reads:
// the name given to os.Getenv, os.LookupEnv or an injected getenv, and
// the names passed along with getenv to a helper (envOr(getenv,
// "BTY_STATE_DIR", ...)). Names are string literals or constants. code
// is what programs read, test what _test.go files and test helper
// packages (those importing "testing") read; each maps a name to where.
func envReads(t *testing.T, root string) (code, test map[string][]string) {
	t.Helper()
	fset := token.NewFileSet()
	type file struct {
		f       *ast.File
		testing bool
	}
	var files []file
	helperPkg := map[string]bool{} // directories of test helper packages
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		isTest := strings.HasSuffix(path, "_test.go")
		if !isTest {
			for _, imp := range f.Imports {
				if imp.Path.Value == `"testing"` {
					helperPkg[filepath.Dir(path)] = true
				}
			}
		}
		files = append(files, file{f, isTest})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	consts := map[string]string{} // string constants by name, any package
	for _, fl := range files {
		for _, decl := range fl.f.Decls {
			g, ok := decl.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, spec := range g.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if i < len(vs.Values) {
						if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
							consts[n.Name], _ = strconv.Unquote(lit.Value)
						}
					}
				}
			}
		}
	}
	value := func(e ast.Expr) string {
		switch e := e.(type) {
		case *ast.BasicLit:
			if e.Kind == token.STRING {
				s, _ := strconv.Unquote(e.Value)
				return s
			}
		case *ast.Ident:
			return consts[e.Name]
		case *ast.SelectorExpr:
			return consts[e.Sel.Name]
		}
		return ""
	}
	name := func(e ast.Expr) string {
		switch e := e.(type) {
		case *ast.Ident:
			return e.Name
		case *ast.SelectorExpr:
			return e.Sel.Name
		}
		return ""
	}
	code, test = map[string][]string{}, map[string][]string{}
	for _, fl := range files {
		pos := fset.Position(fl.f.Pos())
		into := code
		if fl.testing || helperPkg[filepath.Dir(pos.Filename)] {
			into = test
		}
		ast.Inspect(fl.f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			var candidates []ast.Expr
			switch name(call.Fun) {
			case "Getenv", "LookupEnv", "getenv":
				if len(call.Args) > 0 {
					candidates = call.Args[:1]
				}
			default:
				for _, a := range call.Args {
					if name(a) == "getenv" {
						candidates = call.Args
					}
				}
			}
			for _, a := range candidates {
				if v := value(a); envName.MatchString(v) {
					rel, _ := filepath.Rel(root, fset.Position(call.Pos()).Filename)
					into[v] = append(into[v], fmt.Sprintf("%s:%d", rel, fset.Position(call.Pos()).Line))
				}
			}
			return true
		})
	}
	return code, test
}

func readDoc(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(reference)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// section is the text from the heading line to the next heading of the
// same or a higher level.
func section(t *testing.T, doc, heading string) string {
	t.Helper()
	level := strings.Index(heading, " ")
	lines := strings.Split(doc, "\n")
	for i, line := range lines {
		if line != heading {
			continue
		}
		for j := i + 1; j < len(lines); j++ {
			if l := strings.Index(lines[j], " "); strings.HasPrefix(lines[j], "#") && l > 0 && l <= level && strings.Trim(lines[j][:l], "#") == "" {
				return strings.Join(lines[i+1:j], "\n")
			}
		}
		return strings.Join(lines[i+1:], "\n")
	}
	t.Fatalf("%s: no heading %q", reference, heading)
	return ""
}

// tableCells splits a Markdown table row into its trimmed cells; "\|"
// stays inside a cell.
func tableCells(row string) []string {
	row = strings.TrimSpace(row)
	row = strings.TrimPrefix(strings.TrimSuffix(row, "|"), "|")
	var cells []string
	var cur strings.Builder
	for i := 0; i < len(row); i++ {
		switch {
		case row[i] == '\\' && i+1 < len(row) && row[i+1] == '|':
			cur.WriteByte('|')
			i++
		case row[i] == '|':
			cells = append(cells, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteByte(row[i])
		}
	}
	return append(cells, strings.TrimSpace(cur.String()))
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// citation is a section of reference.md named in a comment: the quoted
// words after the page's path, across comment line breaks: one quoted
// heading, or two (a section and its subsection).
var citation = regexp.MustCompile(`docs/reference\.md[^"\n]{0,6}"([^"]+)"(?:[^"\n]{0,4}"([^"]+)")?`)

// TestReferenceCitations: every section a comment in the repository
// cites (docs/reference.md and a quoted heading) is a heading of reference.md, so
// a pointer from the code never leads nowhere.
func TestReferenceCitations(t *testing.T) {
	headings := map[string]bool{}
	for _, line := range strings.Split(readDoc(t), "\n") {
		if h, ok := strings.CutPrefix(strings.TrimLeft(line, "#"), " "); ok && strings.HasPrefix(line, "#") {
			headings[strings.TrimSpace(h)] = true
		}
	}
	comment := regexp.MustCompile(`\n\s*(//|#)\s*`)
	cited := 0
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != ".." || d.Name() == "out" || d.Name() == "bin") {
			return filepath.SkipDir
		}
		if d.IsDir() || !(strings.HasSuffix(path, ".go") || strings.HasSuffix(path, ".sh") || d.Name() == "Makefile") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		flat := comment.ReplaceAllString(string(b), " ")
		for _, m := range citation.FindAllStringSubmatch(flat, -1) {
			for _, h := range m[1:] {
				if h == "" {
					continue
				}
				cited++
				if !headings[h] {
					t.Errorf("%s cites docs/reference.md %q, which has no such heading", path, h)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if cited < 10 {
		t.Errorf("found %d citations of docs/reference.md sections; the scan is broken", cited)
	}
}
