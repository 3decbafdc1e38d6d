package server

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strings"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/human"
)

// Workflows in the browser UI: the list with an upload form, one
// workflow's text with its delete button. Storing and deleting go
// through s.workflows with the checks of PUT and DELETE /workflows.

// workflowForm is the upload form's values and its problems.
type workflowForm struct {
	Name, YAML string
	// Errors are field: message ("name", "workflow"); Error the form's
	// headline.
	Errors map[string]string
	Error  string
}

type workflowsData struct {
	Workflows []fleet.Workflow
	Form      workflowForm
	MaxBytes  string
	Dir       string
}

func (s *Server) uiWorkflows(w http.ResponseWriter, r *http.Request) {
	s.renderWorkflows(w, r, http.StatusOK, workflowForm{})
}

func (s *Server) renderWorkflows(w http.ResponseWriter, r *http.Request, code int, f workflowForm) {
	ws, err := s.workflowList(r.Context())
	if err != nil {
		s.uiInternal(w, r, err)
		return
	}
	d := workflowsData{Workflows: ws, Form: f, MaxBytes: human.Bytes(fleet.MaxWorkflowBytes), Dir: s.workflows.dir}
	s.render(w, r, code, "workflows", uiPage{Title: "Workflows", Nav: "workflows", LoggedIn: true, Data: d})
}

// uiWorkflowUpload stores the posted workflow: the file chosen, else
// the textarea's text, under the name given, else the file's name. It
// is checked as PUT /workflows checks it; a refused one is shown again
// with the problem (its line) and nothing is stored.
func (s *Server) uiWorkflowUpload(w http.ResponseWriter, r *http.Request) {
	// The file and the textarea may both come, each up to the limit.
	r.Body = http.MaxBytesReader(w, r.Body, 2*fleet.MaxWorkflowBytes+64<<10)
	var err error
	if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
		err = r.ParseMultipartForm(4 * fleet.MaxWorkflowBytes)
	} else {
		err = r.ParseForm()
	}
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		s.renderWorkflows(w, r, http.StatusRequestEntityTooLarge, workflowForm{
			Error: fmt.Sprintf("Nothing was stored: a workflow is at most %s.", human.Bytes(fleet.MaxWorkflowBytes))})
		return
	}
	if err != nil {
		s.uiError(w, r, http.StatusBadRequest, "Bad request", "The form could not be read: "+err.Error())
		return
	}
	f := workflowForm{Name: strings.TrimSpace(r.PostFormValue("name")), Errors: map[string]string{}}
	// A textarea's text as typed, with the browser's CRLF made LF.
	f.YAML = strings.ReplaceAll(r.PostFormValue("yaml"), "\r\n", "\n")
	body := []byte(f.YAML)
	if file, hdr, ferr := r.FormFile("file"); ferr == nil {
		b, rerr := io.ReadAll(io.LimitReader(file, fleet.MaxWorkflowBytes+1))
		file.Close()
		if rerr != nil {
			s.uiError(w, r, http.StatusBadRequest, "Bad request", "The file could not be read: "+rerr.Error())
			return
		}
		if len(b) > 0 || hdr.Filename != "" {
			body = b
			if f.Name == "" {
				f.Name = path.Base(strings.ReplaceAll(hdr.Filename, `\`, "/"))
			}
			// Show what was read, so a refused file can be fixed here.
			if len(b) <= fleet.MaxWorkflowBytes {
				f.YAML = string(b)
			}
		}
	}
	refuse := func(code int, field, msg string) {
		f.Errors[field] = msg
		f.Error = "Nothing was stored: correct the marked field."
		s.renderWorkflows(w, r, code, f)
	}
	if err := fleet.CheckWorkflowName(f.Name); err != nil {
		refuse(http.StatusBadRequest, "name", err.Error())
		return
	}
	if len(body) > fleet.MaxWorkflowBytes {
		refuse(http.StatusRequestEntityTooLarge, "workflow", fmt.Sprintf("a workflow is at most %s", human.Bytes(fleet.MaxWorkflowBytes)))
		return
	}
	created, err := s.workflows.put(f.Name, body)
	var ve *fleet.ValidationError
	var ue *uploadError
	switch {
	case errors.As(err, &ve):
		field := "workflow"
		if ve.Field == "name" {
			field = "name"
		}
		refuse(http.StatusBadRequest, field, ve.Msg)
		return
	case errors.As(err, &ue):
		f.Error = "Nothing was stored: " + ue.msg
		s.renderWorkflows(w, r, ue.code, f)
		return
	case err != nil:
		s.uiInternal(w, r, err)
		return
	}
	wf, err := s.workflows.info(f.Name)
	if err != nil {
		s.uiInternal(w, r, err)
		return
	}
	s.log.Info("workflow stored", "name", f.Name, "bytes", len(body), "sha256", wf.SHA256, "created", created, "client", clientAddr(r))
	msg := fmt.Sprintf("Stored workflow %s (%s, sha256 %s).", f.Name, human.Bytes(wf.Size), shortSHA(wf.SHA256))
	if !created {
		msg = fmt.Sprintf("Replaced workflow %s (%s, sha256 %s): machines naming it run the new one from their next run.", f.Name, human.Bytes(wf.Size), shortSHA(wf.SHA256))
	}
	s.setFlash(w, msg)
	redirect(w, r, "/ui/workflows/"+url.PathEscape(f.Name))
}

type workflowData struct {
	W     fleet.Workflow
	Text  string
	Error string
}

// uiWorkflow shows one workflow's text and its delete button.
func (s *Server) uiWorkflow(w http.ResponseWriter, r *http.Request) {
	s.renderWorkflow(w, r, http.StatusOK, "")
}

// renderWorkflow renders the workflow {name}'s page (404 when none),
// with errMsg (a refused delete) at the top.
func (s *Server) renderWorkflow(w http.ResponseWriter, r *http.Request, code int, errMsg string) {
	name := r.PathValue("name")
	b, err := s.workflows.read(name)
	if errors.Is(err, errNoWorkflow) {
		s.uiError(w, r, http.StatusNotFound, "No such workflow", fmt.Sprintf("There is no workflow %q on the server: see the list of workflows, or upload it there.", name))
		return
	}
	if err != nil {
		s.uiInternal(w, r, err)
		return
	}
	wf, err := s.workflowInfo(r.Context(), name)
	if err != nil {
		s.uiInternal(w, r, err)
		return
	}
	d := workflowData{W: wf, Text: string(b), Error: errMsg}
	s.render(w, r, code, "workflow", uiPage{Title: "Workflow " + name, Nav: "workflows", LoggedIn: true, Data: d})
}

// uiWorkflowDelete deletes a workflow no machine references; one that
// machines reference stays, and its page says which (409).
func (s *Server) uiWorkflowDelete(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	err := s.workflows.remove(name, func() ([]fleet.MAC, error) {
		use, err := s.workflowUsers(r.Context())
		return use[name], err
	})
	var inUse *workflowInUseError
	switch {
	case errors.Is(err, errNoWorkflow):
		s.uiError(w, r, http.StatusNotFound, "No such workflow", fmt.Sprintf("There is no workflow %q on the server (deleted meanwhile?), so nothing was deleted.", name))
	case errors.As(err, &inUse):
		s.renderWorkflow(w, r, http.StatusConflict, "Nothing was deleted: "+err.Error()+".")
	case err != nil:
		s.uiInternal(w, r, err)
	default:
		s.log.Info("workflow deleted", "name", name, "client", clientAddr(r))
		s.setFlash(w, "Deleted workflow "+name+".")
		redirect(w, r, "/ui/workflows")
	}
}

// shortSHA is a sha256 (64 hex digits) cut to its first 12; anything
// else as it is.
func shortSHA(s string) string {
	if len(s) == 64 && strings.Trim(s, "0123456789abcdef") == "" {
		return s[:12]
	}
	return s
}
