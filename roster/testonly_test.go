package roster

// Readers of the state that only the tests use: the component and the
// web side are told (Sender, WebSink) or ask ViewFor.

// ViewOfHandle returns what the subscribers of handle that the owner does
// not block see, and whether the handle exists.
func (s *Service) ViewOfHandle(handle string) (View, bool) {
	h := s.handles[handle]
	if h == nil {
		return View{}, false
	}
	return s.publicView(h), true
}

// IsBlocked reports whether owner blocks contact.
func (s *Service) IsBlocked(owner, contact string) bool {
	a := s.accounts[owner]
	return a != nil && a.blocks(s, contact)
}

// WebStatus returns what the web shows of name, between a test's steps.
func (s *Service) WebStatus(name string) WebStatus { return s.webStatus(s.handles[name]) }
