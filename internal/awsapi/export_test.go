package awsapi

import "slices"

// ServedActions lists the actions s's dispatch tables serve, sorted, by service signing name.
func (s *Server) ServedActions() map[string][]string {
	out := map[string][]string{}
	for _, svc := range []*service{s.ec2, s.elbv2, s.sts} {
		for action := range svc.handlers {
			out[svc.name] = append(out[svc.name], action)
		}
		slices.Sort(out[svc.name])
	}
	for _, svc := range []*jsonService{s.acm, s.shield, s.moat, s.tagging} {
		for action := range svc.handlers {
			out[svc.name] = append(out[svc.name], action)
		}
		slices.Sort(out[svc.name])
	}
	return out
}

// Classification says how the access table lists an action: "read", "write", or "" when it is
// missing.
func Classification(service, action string) string {
	a, ok := actionAccess[service][action]
	switch {
	case !ok:
		return ""
	case a == read:
		return "read"
	}
	return "write"
}

// ClassifiedActions lists the actions the access table names, by service.
func ClassifiedActions() map[string][]string {
	out := map[string][]string{}
	for svc, actions := range actionAccess {
		for action := range actions {
			out[svc] = append(out[svc], action)
		}
	}
	return out
}
