package server

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/labels"
	"github.com/btyproject/bty/internal/store"
)

// machineRow is one row of the machines table.
type machineRow struct {
	fleet.Machine
	Selected     bool
	Unassigned   bool
	NextBootText string
	// FailedSinceFlash: the last report is a failure, newer than the
	// last done.
	FailedSinceFlash bool
}

type uiColumn struct {
	Key, Label, Href, AriaSort string
}

type machinesData struct {
	Rows           []machineRow
	Total, Matched int
	// First and Last are the 1-based positions of the page's rows among
	// the matches (0 when none).
	First, Last  int
	Q, Sort, Dir string
	// Selector filters by labels; SelectorError says why it was not
	// used.
	Selector, SelectorError string
	Policy                  fleet.Policy
	DiscoveredOnly          bool
	Columns                 []uiColumn
	Policies                []fleet.Policy
	Images                  []string
	Back, Query             string
	// Page is the page shown (1-based) of Pages; Prev and Next link to
	// the pages beside it ("" when none), keeping filter and sort.
	Page, Pages int
	Prev, Next  string
}

// uiPageRows is how many machines one page of the table shows.
const uiPageRows = 100

// machineColumns are the sortable columns: key (a store.MachineSorts
// order), label.
var machineColumns = [][2]string{
	{store.SortMAC, "MAC"}, {store.SortHostname, "Hostname"}, {store.SortImage, "Image"}, {store.SortPolicy, "Policy"},
	{store.SortNextBoot, "Next boot"}, {store.SortLastSeen, "Last seen"}, {store.SortLastFlashed, "Last flashed"},
}

// newMachineRow is m as a row of the table.
func newMachineRow(m fleet.Machine, selected bool) machineRow {
	return machineRow{Machine: m, Selected: selected, Unassigned: m.Unassigned(), NextBootText: fleet.Decide(m).Why,
		FailedSinceFlash: m.FailedSinceFlash()}
}

// uiMachines is the machine table: one page of uiPageRows machines,
// filtered, sorted and paged by the store (store.QueryMachines).
func (s *Server) uiMachines(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	d := machinesData{
		Q: strings.TrimSpace(q.Get("q")), Policy: fleet.Policy(q.Get("policy")), DiscoveredOnly: q.Get("discovered") == "1",
		Sort: q.Get("sort"), Dir: q.Get("dir"), Policies: fleet.Policies,
	}
	if !slices.ContainsFunc(machineColumns, func(c [2]string) bool { return c[0] == d.Sort }) {
		d.Sort = store.SortMAC
	}
	if d.Dir != "desc" {
		d.Dir = "asc"
	}
	if !d.Policy.Valid() {
		d.Policy = ""
	}
	d.Page, _ = strconv.Atoi(q.Get("page"))
	d.Page = max(d.Page, 1)
	sq := store.MachineQuery{Search: d.Q, Policy: d.Policy, Unassigned: d.DiscoveredOnly, Sort: d.Sort, Desc: d.Dir == "desc",
		Offset: (d.Page - 1) * uiPageRows, Limit: uiPageRows}
	if d.Selector = strings.TrimSpace(q.Get("selector")); d.Selector != "" {
		reqs, err := labels.Parse(d.Selector)
		if err != nil {
			d.SelectorError = err.Error() + "; the table is not filtered by it"
		}
		sq.Selector = reqs
	}
	p, err := s.store.QueryMachines(ctx, sq)
	if err != nil {
		s.uiInternal(w, r, err)
		return
	}
	d.Pages = max(1, (p.Matched+uiPageRows-1)/uiPageRows)
	if d.Page > d.Pages { // past the end (machines went away): the last page
		d.Page = d.Pages
		sq.Offset = (d.Page - 1) * uiPageRows
		if p, err = s.store.QueryMachines(ctx, sq); err != nil {
			s.uiInternal(w, r, err)
			return
		}
	}
	imgs, err := s.catalog.list(ctx)
	if err != nil {
		s.uiInternal(w, r, err)
		return
	}
	for _, e := range imgs {
		d.Images = append(d.Images, e.Name)
	}
	selected := map[fleet.MAC]bool{}
	for _, mac := range q["mac"] {
		if n, err := fleet.ParseMAC(mac); err == nil {
			selected[n] = true
		}
	}
	d.Total, d.Matched = p.Total, p.Matched
	for _, m := range p.Machines {
		d.Rows = append(d.Rows, newMachineRow(m, selected[m.MAC]))
	}
	if len(d.Rows) > 0 {
		d.First, d.Last = sq.Offset+1, sq.Offset+len(d.Rows)
	}

	base := url.Values{}
	for k, v := range map[string]string{"q": d.Q, "policy": string(d.Policy), "selector": d.Selector} {
		if v != "" {
			base.Set(k, v)
		}
	}
	if d.DiscoveredOnly {
		base.Set("discovered", "1")
	}
	for _, c := range machineColumns {
		v := cloneValues(base)
		col := uiColumn{Key: c[0], Label: c[1]}
		dir := "asc"
		if c[0] == d.Sort {
			col.AriaSort = map[string]string{"asc": "ascending", "desc": "descending"}[d.Dir]
			if d.Dir == "asc" {
				dir = "desc"
			}
		}
		v.Set("sort", c[0])
		v.Set("dir", dir)
		col.Href = "/ui/machines?" + v.Encode()
		d.Columns = append(d.Columns, col)
	}
	cur := cloneValues(base)
	cur.Set("sort", d.Sort)
	cur.Set("dir", d.Dir)
	pageURL := func(n int) string {
		v := cloneValues(cur)
		if n > 1 {
			v.Set("page", strconv.Itoa(n))
		}
		return "/ui/machines?" + v.Encode()
	}
	if d.Page > 1 {
		d.Prev = pageURL(d.Page - 1)
	}
	if d.Page < d.Pages {
		d.Next = pageURL(d.Page + 1)
	}
	d.Back = pageURL(d.Page)
	d.Query = strings.TrimPrefix(d.Back, "/ui/machines?")
	s.render(w, r, http.StatusOK, "machines", uiPage{Title: "Machines", Nav: "machines", LoggedIn: true, Data: d})
}

// uiMachineRow is one row of the machine table (the template's "row"),
// for the live table to swap in when that machine changes; 404 when the
// machine is gone. selected=1 renders its checkbox checked.
func (s *Server) uiMachineRow(w http.ResponseWriter, r *http.Request) {
	if m, ok := s.fragmentMachine(w, r); ok {
		s.renderFragment(w, r, "row", newMachineRow(m, r.URL.Query().Get("selected") == "1"))
	}
}

// fragmentMachine reads the machine {mac} for an HTML fragment route;
// on failure it has answered (400, 404, 500) and returns false.
func (s *Server) fragmentMachine(w http.ResponseWriter, r *http.Request) (fleet.Machine, bool) {
	mac, err := fleet.ParseMAC(r.PathValue("mac"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return fleet.Machine{}, false
	}
	m, err := s.store.GetMachine(r.Context(), mac)
	if errors.Is(err, store.ErrNotFound) {
		http.Error(w, "no machine "+mac.String(), http.StatusNotFound)
		return m, false
	}
	if err != nil {
		s.uiInternal(w, r, err)
		return m, false
	}
	return m, true
}

// renderFragment writes the template name of the machines page set,
// without the layout: a piece of a page for htmx to swap in.
func (s *Server) renderFragment(w http.ResponseWriter, r *http.Request, name string, data any) {
	s.renderPageFragment(w, r, "machines", name, data)
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

// uiMachinesBulk applies one change to every selected machine.
func (s *Server) uiMachinesBulk(w http.ResponseWriter, r *http.Request) {
	if !parseForm(w, r) {
		return
	}
	back := r.PostForm.Get("back")
	if !strings.HasPrefix(back, "/ui/machines") || strings.HasPrefix(back, "//") {
		back = "/ui/machines"
	}
	macs := r.PostForm["mac"]
	if len(macs) == 0 {
		s.setFlash(w, "Select at least one machine first (the checkboxes in the first column).")
		redirect(w, r, back)
		return
	}
	var u fleet.MachineUpdate
	var what string
	var op func(fleet.MAC) error
	verb := "Set"
	switch r.PostForm.Get("action") {
	case "reflash", "known-good":
		req := fleet.ReflashRequest{KnownGood: r.PostForm.Get("action") == "known-good"}
		what, verb = "a reflash", "Requested"
		if req.KnownGood {
			what = "a reflash to known-good"
		}
		op = func(mac fleet.MAC) error {
			_, _, err := s.startReflash(r.Context(), mac, req)
			return err
		}
	case "clear":
		what, verb = "quarantine and recovery", "Cleared"
		op = func(mac fleet.MAC) error {
			_, _, err := s.clearMachineCtx(r.Context(), mac)
			return err
		}
	case "policy":
		p := fleet.Policy(r.PostForm.Get("policy"))
		u.BootPolicy, what = &p, "boot policy "+string(p)
	case "image":
		img := r.PostForm.Get("image")
		u.Image, what = &img, "image "+img
		if img == "" {
			what = "no image"
		}
	default:
		s.setFlash(w, "Choose what to do with the selected machines.")
		redirect(w, r, back)
		return
	}
	if op == nil {
		if errs := machineUpdateErrors(u); len(errs) > 0 {
			s.setFlash(w, "Nothing changed: "+errs[0].Error())
			redirect(w, r, back)
			return
		}
		op = func(mac fleet.MAC) error {
			_, _, err := s.updateMachine(r.Context(), mac, u)
			return err
		}
	}
	var done int
	var failed []string
	for _, raw := range macs {
		mac, err := fleet.ParseMAC(raw)
		if err == nil {
			_, err = s.store.GetMachine(r.Context(), mac)
		}
		if err == nil {
			err = op(mac)
		}
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s (%v)", raw, err))
			continue
		}
		done++
	}
	msg := fmt.Sprintf("%s %s on %d machine%s.", verb, what, done, plural(done))
	if len(failed) > 0 {
		msg += " Not changed: " + strings.Join(failed, ", ") + "."
		s.log.Warn("bulk change partly failed", "change", what, "failed", strings.Join(failed, ", "))
	}
	s.log.Info("bulk change", "change", what, "machines", done, "client", clientAddr(r))
	s.setFlash(w, msg)
	redirect(w, r, back)
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// parseForm reads a posted form of at most 1 MiB; on failure it renders
// an error page and returns false.
func parseForm(w http.ResponseWriter, r *http.Request) bool {
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "the form could not be read: "+err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

// imageOption is one entry of an image dropdown.
type imageOption struct {
	Name    string
	Missing bool // assigned but not in the catalog
}

type machineData struct {
	M            fleet.Machine
	F            fleet.Machine // the form's values (the record, or what was posted)
	Errors       map[string]string
	FormError    string
	Unassigned   bool
	NextBootText string
	Images       []imageOption
	Policies     []fleet.Policy
	Modes        []fleet.Mode
	Script       []byte
	ServerURL    string
	// Flashes is the latest flash and a page of the history.
	Flashes flashSection
	// Power is the power control fieldset's values (never a password).
	Power powerForm
	// PowerDrivers are the driver select's choices.
	PowerDrivers []string
	// Workflows are the stored workflows' names (the workflow field's
	// suggestions); SSHPort is the port field's text (as typed when
	// refused).
	Workflows []string
	SSHPort   string
	// LabelsText is the labels field's text: key=value lines (as typed
	// when refused).
	LabelsText string
	// Runs is the "Workflow runs" section.
	Runs runsSection
	// Actions are the latest steps of the machine's recovery, newest
	// first.
	Actions []fleet.Action
	// NICLinked says, for each NIC of the inventory, whether a PXE
	// contact from it is this machine's (its own MAC, or linked to it:
	// docs/reference.md, "Inventory").
	NICLinked map[fleet.MAC]bool
}

// powerForm is what the machine form's power control fieldset shows:
// the stored settings, or what was posted. It has no password field at
// all, so no page can show one back.
type powerForm struct {
	Driver, Address, Username string
	// CipherSuite is text, so a refused value is shown as typed.
	CipherSuite string
	System      string
	Insecure    bool
	// PasswordSet: a password is stored (an empty field keeps it).
	PasswordSet bool
	// Retype: a password was typed but not saved (the form was refused).
	Retype bool
}

// powerFormOf is the fieldset's values for the stored settings p.
func powerFormOf(p *fleet.Power) powerForm {
	if p == nil {
		return powerForm{Driver: fleet.DriverNone}
	}
	f := powerForm{Driver: p.Driver, Address: p.Address, Username: p.Username, System: p.System, Insecure: p.Insecure,
		PasswordSet: p.PasswordSet || p.Password != ""}
	if p.CipherSuite != 0 {
		f.CipherSuite = strconv.Itoa(p.CipherSuite)
	}
	return f
}

// powerDrivers are the choices of the form's driver select.
var powerDrivers = []string{fleet.DriverNone, "ipmi", "redfish"}

// powerUpdateOf reads the power control fieldset of the posted form f
// (cur: the stored settings) into an update, the values to show again
// and the problems of fields the update cannot carry (a cipher suite
// that is not a number). Driver none removes power control. Only the
// chosen driver's fields are read: the other driver's are cleared, so
// switching drivers needs no emptying of fields the form still shows.
// An empty password keeps the stored one.
func powerUpdateOf(f url.Values, cur *fleet.Power) (*fleet.PowerUpdate, powerForm, []*fleet.ValidationError) {
	get := func(k string) string { return strings.TrimSpace(f.Get(k)) }
	pf := powerForm{Driver: get("power_driver"), Address: get("power_address"), Username: get("power_username"),
		CipherSuite: get("power_cipher_suite"), System: get("power_system"), Insecure: f.Get("power_insecure") != "",
		PasswordSet: cur != nil && (cur.PasswordSet || cur.Password != "")}
	pw := f.Get("power_password") // as typed: spaces may be part of it
	pf.Retype = pw != ""
	u := &fleet.PowerUpdate{Driver: &pf.Driver}
	if pf.Driver == fleet.DriverNone {
		if cur == nil {
			return nil, pf, nil
		}
		return u, pf, nil
	}
	var errs []*fleet.ValidationError
	suite, system, insecure := 0, "", false
	switch pf.Driver {
	case "ipmi":
		if pf.CipherSuite != "" {
			n, err := strconv.Atoi(pf.CipherSuite)
			if err != nil {
				errs = append(errs, &fleet.ValidationError{Field: "power.cipher_suite",
					Msg: "not a number: use 0 or empty (let the library pick) or 1-19, typically 3 or 17"})
			}
			suite = n
		}
	case "redfish":
		system, insecure = pf.System, pf.Insecure
	}
	u.Address, u.Username, u.CipherSuite, u.System, u.Insecure = &pf.Address, &pf.Username, &suite, &system, &insecure
	if pw != "" {
		u.Password = &pw
	}
	if len(errs) == 0 && samePower(u.Apply(cur), cur) {
		// Unchanged: not an update, so saving other fields is not
		// refused over stored settings that lack something (an import
		// without secrets leaves no password).
		return nil, pf, nil
	}
	return u, pf, errs
}

// samePower says a and b are the same settings (or both none).
func samePower(a, b *fleet.Power) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func (s *Server) uiMachine(w http.ResponseWriter, r *http.Request) {
	m, ok := s.uiLoadMachine(w, r)
	if !ok {
		return
	}
	s.renderMachine(w, r, http.StatusOK, m, m, powerFormOf(m.Power), nil)
}

// uiLoadMachine loads the machine named by the path, rendering 400/404
// pages when it cannot.
func (s *Server) uiLoadMachine(w http.ResponseWriter, r *http.Request) (fleet.Machine, bool) {
	mac, err := fleet.ParseMAC(r.PathValue("mac"))
	if err != nil {
		s.uiError(w, r, http.StatusBadRequest, "Bad MAC address", err.Error())
		return fleet.Machine{}, false
	}
	m, err := s.store.GetMachine(r.Context(), mac)
	if errors.Is(err, store.ErrNotFound) {
		s.uiError(w, r, http.StatusNotFound, "No such machine", "There is no machine "+mac.String()+". It may have been deleted; machines appear when they PXE-boot.")
		return fleet.Machine{}, false
	}
	if err != nil {
		s.uiInternal(w, r, err)
		return fleet.Machine{}, false
	}
	return m, true
}

// renderMachine renders the machine page of m with the form showing
// form and pf, and errs (field: message) at their fields.
func (s *Server) renderMachine(w http.ResponseWriter, r *http.Request, code int, m, form fleet.Machine, pf powerForm, errs map[string]string) {
	s.renderMachineWith(w, r, code, m, form, pf, errs, "")
}

// renderMachineWith is renderMachine with runsErr (a refused reflash to
// known-good) shown in the runs section. A refused cijoe_ssh_port that
// was not a number is shown as typed (errs["cijoe_ssh_port_text"]).
func (s *Server) renderMachineWith(w http.ResponseWriter, r *http.Request, code int, m, form fleet.Machine, pf powerForm, errs map[string]string, runsErr string) {
	d := machineData{M: m, F: form, Errors: errs, Unassigned: m.Unassigned(), NextBootText: fleet.Decide(m).Why,
		Policies: fleet.Policies, Modes: fleet.Modes, ServerURL: s.serverURL(r), Power: pf, PowerDrivers: powerDrivers}
	if form.CijoeSSHPort != 0 {
		d.SSHPort = strconv.Itoa(form.CijoeSSHPort)
	}
	d.LabelsText = strings.ReplaceAll(form.Labels.String(), ",", "\n")
	d.NICLinked = s.nicLinks(r, m)
	if t, ok := errs[labelsTextKey]; ok {
		d.LabelsText = t
		delete(errs, labelsTextKey)
	}
	if t, ok := errs[portTextKey]; ok {
		d.SSHPort = t
		delete(errs, portTextKey)
	}
	if len(errs) > 0 {
		d.FormError = "Nothing was saved: correct the marked fields."
	}
	ws, err := s.workflows.list()
	if err != nil {
		s.uiInternal(w, r, err)
		return
	}
	for _, wf := range ws {
		d.Workflows = append(d.Workflows, wf.Name)
	}
	if d.Runs, err = s.runsSectionOf(r.Context(), m); err != nil {
		s.uiInternal(w, r, err)
		return
	}
	d.Runs.Error = runsErr
	if d.Actions, _, err = s.store.ListActions(r.Context(), m.MAC, 20, 0); err != nil {
		s.uiInternal(w, r, err)
		return
	}
	imgs, err := s.catalog.list(r.Context())
	if err != nil {
		s.uiInternal(w, r, err)
		return
	}
	seen := map[string]bool{}
	for _, e := range imgs {
		d.Images = append(d.Images, imageOption{Name: e.Name})
		seen[e.Name] = true
	}
	for _, n := range []string{form.Image, m.Image} {
		if n != "" && !seen[n] {
			d.Images = append(d.Images, imageOption{Name: n, Missing: true})
			seen[n] = true
		}
	}
	d.Script, _ = s.bootScript(r.Context(), m, fleet.Decide(m), s.serverURL(r), true)
	if d.Flashes, err = s.flashSectionOf(r.Context(), m, flashesOffset(r)); err != nil {
		s.uiInternal(w, r, err)
		return
	}
	title := m.MAC.String()
	if m.Hostname != "" {
		title = m.Hostname
	}
	s.render(w, r, code, "machine", uiPage{Title: title, Nav: "machines", LoggedIn: true, Data: d})
}

func (s *Server) uiMachineSave(w http.ResponseWriter, r *http.Request) {
	m, ok := s.uiLoadMachine(w, r)
	if !ok {
		return
	}
	if !parseForm(w, r) {
		return
	}
	f := r.PostForm
	get := func(k string) *string {
		v := strings.TrimSpace(f.Get(k))
		return &v
	}
	// A textarea's text as typed, with the browser's CRLF line ends made
	// LF (cloud-init's own) and nothing else changed; blank is empty.
	text := func(k string) *string {
		v := strings.ReplaceAll(f.Get(k), "\r\n", "\n")
		if strings.TrimSpace(v) == "" {
			v = ""
		}
		return &v
	}
	mode, policy := fleet.Mode(*get("provisioning_mode")), fleet.Policy(*get("boot_policy"))
	u := fleet.MachineUpdate{Image: get("image"), ProvisioningMode: &mode, Hostname: get("hostname"),
		CijoeWorkflowRef: get("cijoe_workflow_ref"), BootPolicy: &policy}
	if _, ok := f["user_data"]; ok {
		u.UserData, u.MetaData = text("user_data"), text("meta_data")
	}
	// Forms from before these fields existed leave them as they are.
	if _, ok := f["ready_check"]; ok {
		rc := fleet.ReadyCheck(*get("ready_check"))
		u.ReadyCheck = &rc
	}
	if _, ok := f["flash_deadline"]; ok {
		u.FlashDeadline = get("flash_deadline")
	}
	if _, ok := f["cijoe_ssh_user"]; ok {
		u.CijoeSSHUser, u.CijoeTimeout = get("cijoe_ssh_user"), get("cijoe_timeout")
	}
	if _, ok := f["health_every"]; ok {
		u.HealthEvery, u.HealthFailAfter = get("health_every"), get("health_fail_after")
	}
	// The port is a number; empty is 0 (22). Text that is not one is
	// refused at its field and shown as typed.
	var portErr *fleet.ValidationError
	portText, hasPort := f["cijoe_ssh_port"]
	if hasPort {
		t := strings.TrimSpace(f.Get("cijoe_ssh_port"))
		n := 0
		if t != "" {
			var err error
			if n, err = strconv.Atoi(t); err != nil {
				portErr = &fleet.ValidationError{Field: "cijoe_ssh_port", Msg: fmt.Sprintf("%q is not a number: give a TCP port 1-65535, or empty for 22", truncateText(t, 64))}
				n = 0
			}
		}
		u.CijoeSSHPort = &n
	}
	// Labels: one key=value per line; the record's labels not listed
	// are removed.
	var labelsErr *fleet.ValidationError
	labelsText, hasLabels := f["labels"]
	var formLabels fleet.Labels
	if hasLabels {
		formLabels = fleet.Labels{}
		for _, line := range strings.Split(strings.ReplaceAll(f.Get("labels"), "\r\n", "\n"), "\n") {
			if line = strings.TrimSpace(line); line == "" {
				continue
			}
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				labelsErr = &fleet.ValidationError{Field: "labels", Msg: fmt.Sprintf("%q: write one label per line as key=value", truncateText(line, 64))}
				break
			}
			formLabels[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
		u.Labels = fleet.LabelUpdate{}
		for k := range m.Labels {
			if _, keep := formLabels[k]; !keep {
				u.Labels[k] = nil
			}
		}
		for k, v := range formLabels {
			u.Labels[k] = &v
		}
	}
	// The power fieldset is read when the form has it (its hidden
	// marker "power": an unchecked checkbox posts nothing).
	pf := powerFormOf(m.Power)
	var perrs []*fleet.ValidationError
	if _, ok := f["power"]; ok {
		u.Power, pf, perrs = powerUpdateOf(f, m.Power)
	}
	form := m
	form.Image, form.ProvisioningMode, form.Hostname = *u.Image, *u.ProvisioningMode, *u.Hostname
	form.CijoeWorkflowRef, form.BootPolicy = *u.CijoeWorkflowRef, *u.BootPolicy
	if u.UserData != nil {
		form.UserData, form.MetaData = *u.UserData, *u.MetaData
	}
	if u.ReadyCheck != nil {
		form.ReadyCheck = *u.ReadyCheck
	}
	if u.FlashDeadline != nil {
		form.FlashDeadline = *u.FlashDeadline
	}
	if u.CijoeSSHUser != nil {
		form.CijoeSSHUser, form.CijoeTimeout = *u.CijoeSSHUser, *u.CijoeTimeout
	}
	if u.HealthEvery != nil {
		form.HealthEvery, form.HealthFailAfter = *u.HealthEvery, *u.HealthFailAfter
	}
	if u.CijoeSSHPort != nil {
		form.CijoeSSHPort = *u.CijoeSSHPort
	}
	if hasLabels {
		form.Labels = formLabels
	}
	// Every refused field is marked at once (a cipher suite that is not
	// a number is 0 in u: its own message comes first and stays).
	more, err := s.powerErrors(r.Context(), m.MAC, u.Power)
	if err != nil {
		s.uiInternal(w, r, err)
		return
	}
	errs := machineUpdateErrors(u)
	if portErr != nil {
		errs = append([]*fleet.ValidationError{portErr}, errs...)
	}
	if labelsErr != nil {
		errs = append([]*fleet.ValidationError{labelsErr}, errs...)
	}
	errs = append(append(errs, perrs...), more...)
	// withPort keeps the port's text as typed for the page.
	withPort := func(fields map[string]string) map[string]string {
		if hasPort && len(portText) > 0 {
			fields[portTextKey] = strings.TrimSpace(portText[0])
		}
		if hasLabels && len(labelsText) > 0 {
			fields[labelsTextKey] = labelsText[0]
		}
		return fields
	}
	if len(errs) > 0 {
		fields := map[string]string{}
		for _, e := range errs {
			if _, dup := fields[e.Field]; !dup {
				fields[e.Field] = e.Msg
			}
		}
		s.renderMachine(w, r, http.StatusBadRequest, m, form, pf, withPort(fields))
		return
	}
	saved, _, err := s.updateMachine(r.Context(), m.MAC, u)
	var ve *fleet.ValidationError
	if errors.As(err, &ve) {
		s.renderMachine(w, r, http.StatusBadRequest, m, form, pf, withPort(map[string]string{ve.Field: ve.Msg}))
		return
	}
	if err != nil {
		s.uiInternal(w, r, err)
		return
	}
	s.log.Info("machine saved", "mac", m.MAC, "client", clientAddr(r))
	s.setFlash(w, "Saved. Next PXE boot: "+fleet.Decide(saved).Why+".")
	redirect(w, r, "/ui/machines/"+m.MAC.String())
}

// labelsTextKey carries the labels field's text through renderMachine's
// errs, like portTextKey.
const labelsTextKey = "labels_text"

// portTextKey carries the port field's text through renderMachine's
// errs (never a field name).
const portTextKey = "\x00cijoe_ssh_port_text"

// truncateText is s cut to n runes.
func truncateText(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}

type confirmData struct {
	Question, Button, Action, Back string
	Details                        []string
	// Fields are hidden form fields the confirmed POST carries.
	Fields map[string]string
}

func (s *Server) uiMachineDeleteConfirm(w http.ResponseWriter, r *http.Request) {
	m, ok := s.uiLoadMachine(w, r)
	if !ok {
		return
	}
	mac := m.MAC.String()
	name := mac
	if m.Hostname != "" {
		name = m.Hostname + " (" + mac + ")"
	}
	d := confirmData{Question: "Delete the record of " + name + "?", Button: "Delete machine",
		Action: "/ui/machines/" + mac + "/delete", Back: "/ui/machines/" + mac,
		Details: []string{"Its settings are lost. If it PXE-boots again it comes back as a new discovered machine with boot policy tui."}}
	s.render(w, r, http.StatusOK, "confirm", uiPage{Title: "Delete machine", Nav: "machines", LoggedIn: true, Data: d})
}

func (s *Server) uiMachineDelete(w http.ResponseWriter, r *http.Request) {
	m, ok := s.uiLoadMachine(w, r)
	if !ok {
		return
	}
	if err := s.deleteMachine(r.Context(), m.MAC); err != nil && !errors.Is(err, store.ErrNotFound) {
		s.uiInternal(w, r, err)
		return
	}
	s.log.Info("machine deleted", "mac", m.MAC, "client", clientAddr(r))
	s.setFlash(w, "Deleted machine "+m.MAC.String()+".")
	redirect(w, r, "/ui/machines")
}
