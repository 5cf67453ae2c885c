package awsapi

import (
	"context"
	"maps"
	"slices"

	"github.com/moatlb/moat/internal/cloud"
)

// The Resource Groups Tagging API: GetResources finds a load balancer controller's load
// balancers, target groups, listeners and security groups by tag (the AWS Load Balancer
// Controller asks it under its EnableRGTAPI feature gate) without describing every load balancer.
const (
	taggingSigningName = "tagging"
	taggingTarget      = "ResourceGroupsTaggingAPI_20170126"
	// taggingIAMPrefix is the API's prefix in IAM actions (tag:GetResources), which is not its
	// signing name.
	taggingIAMPrefix = "tag"
)

type tagFilter struct {
	Key    string
	Values []string
}

type getResourcesInput struct {
	TagFilters                []tagFilter
	ResourceTypeFilters       []string
	ResourceARNList           []string
	PaginationToken           string
	ResourcesPerPage          *int
	TagsPerPage               *int
	IncludeComplianceDetails  bool
	ExcludeCompliantResources bool
}

type taggingTag struct {
	Key   string
	Value string
}

type resourceTagMapping struct {
	ResourceARN string
	Tags        []taggingTag
}

func (s *Server) taggingHandlers() map[string]jsonHandler {
	return map[string]jsonHandler{
		"GetResources": jsonOp(func(_ context.Context, in *getResourcesInput) (any, error) {
			req := cloud.GetResourcesInput{
				ResourceTypeFilters:       in.ResourceTypeFilters,
				ResourceARNs:              in.ResourceARNList,
				PaginationToken:           in.PaginationToken,
				ResourcesPerPage:          in.ResourcesPerPage,
				TagsPerPage:               in.TagsPerPage,
				IncludeComplianceDetails:  in.IncludeComplianceDetails,
				ExcludeCompliantResources: in.ExcludeCompliantResources,
			}
			for _, f := range in.TagFilters {
				req.TagFilters = append(req.TagFilters, cloud.TagFilter(f))
			}
			page, next, err := s.cloud.GetResources(req)
			if err != nil {
				return nil, err
			}
			out := struct {
				PaginationToken        string // "" on the last page, as AWS answers
				ResourceTagMappingList []resourceTagMapping
			}{PaginationToken: next, ResourceTagMappingList: []resourceTagMapping{}}
			for _, r := range page {
				m := resourceTagMapping{ResourceARN: r.ARN, Tags: []taggingTag{}}
				for _, k := range slices.Sorted(maps.Keys(r.Tags)) {
					m.Tags = append(m.Tags, taggingTag{k, r.Tags[k]})
				}
				out.ResourceTagMappingList = append(out.ResourceTagMappingList, m)
			}
			return out, nil
		}),
	}
}

// iamAction is the IAM action of a service's action, as a denial names it: the service's IAM
// prefix is its signing name, but for the Tagging API's.
func iamAction(service, action string) string {
	if service == taggingSigningName {
		service = taggingIAMPrefix
	}
	return service + ":" + action
}
