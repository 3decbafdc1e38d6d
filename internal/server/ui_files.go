package server

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/human"
)

type uiImage struct {
	api.Image
	UsedBy int
}

// ChunksText describes the image's chunk store (Chunks column).
func (i uiImage) ChunksText() string { return chunkText(i.Chunks) }

type imagesData struct {
	Images         []uiImage
	Root, Suffixes string
	MaxUpload      string
}

func (s *Server) uiImages(w http.ResponseWriter, r *http.Request) {
	imgs, err := s.catalog.list(r.Context())
	if err != nil {
		s.uiInternal(w, r, err)
		return
	}
	use, err := s.imageUse(r)
	if err != nil {
		s.uiInternal(w, r, err)
		return
	}
	d := imagesData{Root: s.cfg.ImageRoot, Suffixes: suffixes, MaxUpload: human.Bytes(s.cfg.MaxUpload)}
	for _, e := range imgs {
		d.Images = append(d.Images, uiImage{Image: e, UsedBy: use[e.Name]})
	}
	s.render(w, r, http.StatusOK, "images", uiPage{Title: "Images", Nav: "images", LoggedIn: true, Data: d})
}

// imageUse counts the machines that have each image assigned (as image
// or last known good).
func (s *Server) imageUse(r *http.Request) (map[string]int, error) {
	ms, err := s.store.ListMachines(r.Context())
	if err != nil {
		return nil, err
	}
	use := map[string]int{}
	for _, m := range ms {
		if m.Image != "" {
			use[m.Image]++
		}
		if k := m.LastKnownGood; k != nil && k.Image != "" && k.Image != m.Image {
			use[k.Image]++
		}
	}
	return use, nil
}

// uiImageName checks the image named by the path exists, rendering
// 400/404 pages when not.
func (s *Server) uiImageName(w http.ResponseWriter, r *http.Request) (string, os.FileInfo, bool) {
	name := r.PathValue("name")
	if err := checkName(name); err != nil {
		s.uiError(w, r, http.StatusBadRequest, "Bad image name", err.Error())
		return "", nil, false
	}
	st, err := os.Stat(filepath.Join(s.cfg.ImageRoot, name))
	if err != nil || !st.Mode().IsRegular() {
		s.uiError(w, r, http.StatusNotFound, "No such image", fmt.Sprintf("There is no image %q in the catalog.", name))
		return "", nil, false
	}
	return name, st, true
}

func (s *Server) uiImageDeleteConfirm(w http.ResponseWriter, r *http.Request) {
	name, st, ok := s.uiImageName(w, r)
	if !ok {
		return
	}
	use, err := s.imageUse(r)
	if err != nil {
		s.uiInternal(w, r, err)
		return
	}
	d := confirmData{Question: fmt.Sprintf("Delete the image %s (%s)?", name, human.Bytes(st.Size())),
		Button: "Delete image", Action: "/ui/images/" + url.PathEscape(name) + "/delete", Back: "/ui/images",
		Details: []string{"The file is removed from " + s.cfg.ImageRoot + "; it cannot be undone."}}
	if n := use[name]; n > 0 {
		d.Details = append(d.Details, fmt.Sprintf("%d machine%s still name%s it: their next flash will fail until they get another image.",
			n, plural(n), map[bool]string{true: "s", false: ""}[n == 1]))
	}
	s.render(w, r, http.StatusOK, "confirm", uiPage{Title: "Delete image", Nav: "images", LoggedIn: true, Data: d})
}

func (s *Server) uiImageDelete(w http.ResponseWriter, r *http.Request) {
	name, _, ok := s.uiImageName(w, r)
	if !ok {
		return
	}
	if err := s.deleteImage(name, clientAddr(r)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.uiInternal(w, r, err)
		return
	}
	s.setFlash(w, "Deleted image "+name+".")
	redirect(w, r, "/ui/images")
}

type bootData struct {
	Files    []api.BootFile
	Required []string
	Missing  int
	Dir      string
}

func (s *Server) uiBoot(w http.ResponseWriter, r *http.Request) {
	files, err := s.bootFiles()
	if err != nil {
		s.uiInternal(w, r, err)
		return
	}
	d := bootData{Files: files, Required: bootArtifacts, Dir: s.cfg.BootDir}
	for _, f := range files {
		if f.Required && !f.Present {
			d.Missing++
		}
	}
	s.render(w, r, http.StatusOK, "boot", uiPage{Title: "Boot artifacts", Nav: "boot", LoggedIn: true, Data: d})
}
