package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/btyproject/bty/internal/fleet"
)

// Workflows (docs/reference.md, "cijoe-online"): cijoe workflow files
// bty-web keeps in $BTY_STATE_DIR/workflows, one file per name, checked
// on upload (fleet.CheckWorkflow) and written atomically.

// workflowStore is the workflow directory.
type workflowStore struct {
	dir string
	// mu orders writes and deletes with the checks that machines
	// reference a workflow.
	mu sync.Mutex
}

func newWorkflowStore(stateDir string) *workflowStore {
	return &workflowStore{dir: filepath.Join(stateDir, "workflows")}
}

// errNoWorkflow is a workflow name with no file.
var errNoWorkflow = errors.New("no such workflow")

// read returns a workflow's bytes (errNoWorkflow when there is none).
func (ws *workflowStore) read(name string) ([]byte, error) {
	if err := fleet.CheckWorkflowName(name); err != nil {
		return nil, fmt.Errorf("%w: %v", errNoWorkflow, err)
	}
	b, err := os.ReadFile(filepath.Join(ws.dir, name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("workflow %s: %w (upload it: bty-ctl workflows upload FILE)", name, errNoWorkflow)
	}
	return b, err
}

// info is a workflow's listing entry (Machines left to the caller).
func (ws *workflowStore) info(name string) (fleet.Workflow, error) {
	b, err := ws.read(name)
	if err != nil {
		return fleet.Workflow{}, err
	}
	fi, err := os.Stat(filepath.Join(ws.dir, name))
	if err != nil {
		return fleet.Workflow{}, err
	}
	return fleet.Workflow{Name: name, Size: int64(len(b)), SHA256: fleet.SHA256Hex(b), ModifiedAt: fi.ModTime().UTC(), Machines: []fleet.MAC{}}, nil
}

// list returns every workflow, by name.
func (ws *workflowStore) list() ([]fleet.Workflow, error) {
	ents, err := os.ReadDir(ws.dir)
	if errors.Is(err, os.ErrNotExist) {
		return []fleet.Workflow{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := []fleet.Workflow{}
	for _, e := range ents {
		if !e.Type().IsRegular() || fleet.CheckWorkflowName(e.Name()) != nil {
			continue // temp files of writes in progress, strays
		}
		w, err := ws.info(e.Name())
		if err != nil {
			continue // deleted meanwhile
		}
		out = append(out, w)
	}
	return out, nil
}

// put checks and writes a workflow; created says it is new.
func (ws *workflowStore) put(name string, b []byte) (created bool, err error) {
	if err := fleet.CheckWorkflowName(name); err != nil {
		return false, &fleet.ValidationError{Field: "name", Msg: err.Error()}
	}
	if err := fleet.CheckWorkflow(b); err != nil {
		return false, &fleet.ValidationError{Field: "workflow", Msg: "workflow " + name + ": " + err.Error()}
	}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if err := os.MkdirAll(ws.dir, 0o750); err != nil {
		return false, err
	}
	path := filepath.Join(ws.dir, name)
	_, err = os.Stat(path)
	created = errors.Is(err, os.ErrNotExist)
	f, err := os.CreateTemp(ws.dir, ".upload-*")
	if err != nil {
		return false, err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o640)
	}
	if err != nil {
		return false, writeError507(err)
	}
	return created, os.Rename(f.Name(), path)
}

// remove deletes a workflow unless inUse (called under the lock) names
// machines that reference it: then a *workflowInUseError.
func (ws *workflowStore) remove(name string, inUse func() ([]fleet.MAC, error)) error {
	if _, err := ws.read(name); err != nil {
		return err
	}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	macs, err := inUse()
	if err != nil {
		return err
	}
	if len(macs) > 0 {
		return &workflowInUseError{name: name, macs: macs}
	}
	err = os.Remove(filepath.Join(ws.dir, name))
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("workflow %s: %w", name, errNoWorkflow)
	}
	return err
}

type workflowInUseError struct {
	name string
	macs []fleet.MAC
}

func (e *workflowInUseError) Error() string {
	names := make([]string, 0, len(e.macs))
	for i, m := range e.macs {
		if i == 10 {
			names = append(names, fmt.Sprintf("and %d more", len(e.macs)-10))
			break
		}
		names = append(names, m.String())
	}
	return fmt.Sprintf("workflow %s is the cijoe_workflow_ref of %s: point them at another workflow first", e.name, strings.Join(names, ", "))
}

// workflowUsers maps each workflow name to the machines referencing it.
func (s *Server) workflowUsers(ctx context.Context) (map[string][]fleet.MAC, error) {
	ms, err := s.store.ListMachines(ctx)
	if err != nil {
		return nil, err
	}
	use := map[string][]fleet.MAC{}
	for _, m := range ms {
		if m.CijoeWorkflowRef != "" {
			use[m.CijoeWorkflowRef] = append(use[m.CijoeWorkflowRef], m.MAC)
		}
	}
	return use, nil
}

// workflowInfo is one workflow with the machines referencing it.
func (s *Server) workflowInfo(ctx context.Context, name string) (fleet.Workflow, error) {
	wf, err := s.workflows.info(name)
	if err != nil {
		return wf, err
	}
	use, err := s.workflowUsers(ctx)
	if err != nil {
		return wf, err
	}
	if m := use[name]; m != nil {
		wf.Machines = m
	}
	return wf, nil
}

// workflowList is every workflow with the machines referencing it.
func (s *Server) workflowList(ctx context.Context) ([]fleet.Workflow, error) {
	ws, err := s.workflows.list()
	if err != nil {
		return nil, err
	}
	use, err := s.workflowUsers(ctx)
	if err != nil {
		return nil, err
	}
	for i := range ws {
		if m := use[ws[i].Name]; m != nil {
			ws[i].Machines = m
		}
	}
	return ws, nil
}

func (s *Server) handleWorkflows(w http.ResponseWriter, r *http.Request) {
	ws, err := s.workflowList(r.Context())
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ws)
}

func (s *Server) handleWorkflowGet(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	b, err := s.workflows.read(name)
	if errors.Is(err, errNoWorkflow) {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/yaml")
	w.Header().Set("X-Workflow-SHA256", fleet.SHA256Hex(b))
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(b)
}

func (s *Server) handleWorkflowPut(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := fleet.CheckWorkflowName(name); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, fleet.MaxWorkflowBytes))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("a workflow is at most %d bytes", fleet.MaxWorkflowBytes))
		return
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "reading the workflow: "+err.Error())
		return
	}
	created, err := s.workflows.put(name, b)
	if fleet.IsValidation(err) {
		writeError(w, http.StatusBadRequest, err.(*fleet.ValidationError).Msg)
		return
	}
	var ue *uploadError
	if errors.As(err, &ue) {
		writeError(w, ue.code, ue.msg)
		return
	}
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	wf, err := s.workflowInfo(r.Context(), name)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	s.log.Info("workflow stored", "name", name, "bytes", len(b), "sha256", wf.SHA256, "created", created, "client", clientAddr(r))
	code := http.StatusOK
	if created {
		code = http.StatusCreated
	}
	writeJSON(w, code, wf)
}

func (s *Server) handleWorkflowDelete(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	err := s.workflows.remove(name, func() ([]fleet.MAC, error) {
		use, err := s.workflowUsers(r.Context())
		return use[name], err
	})
	var inUse *workflowInUseError
	switch {
	case errors.Is(err, errNoWorkflow):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.As(err, &inUse):
		writeError(w, http.StatusConflict, err.Error())
	case err != nil:
		s.internalError(w, r, err)
	default:
		s.log.Info("workflow deleted", "name", name, "client", clientAddr(r))
		w.WriteHeader(http.StatusNoContent)
	}
}

// checkWorkflowRef is the field-level error of a record in cijoe-online
// mode whose workflow reference names no stored workflow (nil when
// fine or not in that mode).
func (s *Server) checkWorkflowRef(m fleet.Machine) *fleet.ValidationError {
	if m.ProvisioningMode != fleet.ModeCijoeOnline {
		return nil
	}
	if m.CijoeWorkflowRef == "" {
		return &fleet.ValidationError{Field: "cijoe_workflow_ref", Msg: "provisioning cijoe-online needs a workflow: name one from GET /workflows (bty-ctl workflows list)"}
	}
	if _, err := s.workflows.read(m.CijoeWorkflowRef); err != nil {
		have := ""
		if ws, lerr := s.workflows.list(); lerr == nil && len(ws) > 0 {
			names := []string{}
			for _, w := range ws {
				names = append(names, w.Name)
			}
			have = " (have: " + strings.Join(names[:min(len(names), 10)], ", ") + ")"
		}
		return &fleet.ValidationError{Field: "cijoe_workflow_ref", Msg: fmt.Sprintf("no workflow %q on the server%s: upload it first (bty-ctl workflows upload FILE)", m.CijoeWorkflowRef, have)}
	}
	return nil
}
