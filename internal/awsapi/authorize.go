package awsapi

import "github.com/moatlb/moat/internal/awsapi/sigv4"

// access is what a key needs to call an action.
type access int

const (
	// write: full access. The zero value, so that an action missing from actionAccess needs it.
	write access = iota
	// read: any valid key, read-only ones included.
	read
)

// actionAccess classifies every action the endpoint serves, by service (SigV4 signing name).
// Read-only keys (moat_read_only in the credentials file) may call the read actions only. An action
// missing here counts as write, so one added to a dispatch table is refused to read-only keys until
// it is listed (fail closed), and TestEveryActionIsClassified fails until it is.
var actionAccess = map[string]map[string]access{
	"ec2": {
		"DescribeAvailabilityZones":                  read,
		"DescribeInstances":                          read,
		"DescribeManagedPrefixLists":                 read,
		"DescribeNetworkInterfaces":                  read,
		"DescribeRouteTables":                        read,
		"DescribeSecurityGroupRules":                 read,
		"DescribeSecurityGroups":                     read,
		"DescribeSubnets":                            read,
		"DescribeVpcs":                               read,
		"DescribeVpcAttribute":                       read,
		"GetManagedPrefixListEntries":                read,
		"AuthorizeSecurityGroupEgress":               write,
		"AuthorizeSecurityGroupIngress":              write,
		"CreateSecurityGroup":                        write,
		"CreateTags":                                 write,
		"CreateVpc":                                  write,
		"DeleteVpc":                                  write,
		"ModifyVpcAttribute":                         write,
		"CreateSubnet":                               write,
		"DeleteSubnet":                               write,
		"ModifySubnetAttribute":                      write,
		"AssociateVpcCidrBlock":                      write,
		"DisassociateVpcCidrBlock":                   write,
		"AssociateSubnetCidrBlock":                   write,
		"DisassociateSubnetCidrBlock":                write,
		"DeleteSecurityGroup":                        write,
		"DeleteTags":                                 write,
		"ModifyNetworkInterfaceAttribute":            write,
		"RevokeSecurityGroupEgress":                  write,
		"RevokeSecurityGroupIngress":                 write,
		"UpdateSecurityGroupRuleDescriptionsEgress":  write,
		"UpdateSecurityGroupRuleDescriptionsIngress": write,
	},
	"elasticloadbalancing": {
		"DescribeCapacityReservation":    read,
		"DescribeListenerAttributes":     read,
		"DescribeListenerCertificates":   read,
		"DescribeSSLPolicies":            read,
		"DescribeListeners":              read,
		"DescribeLoadBalancerAttributes": read,
		"DescribeLoadBalancers":          read,
		"DescribeRules":                  read,
		"DescribeTags":                   read,
		"DescribeTargetGroupAttributes":  read,
		"DescribeTargetGroups":           read,
		"DescribeTargetHealth":           read,
		"AddTags":                        write,
		"CreateListener":                 write,
		"CreateLoadBalancer":             write,
		"CreateTargetGroup":              write,
		"DeleteListener":                 write,
		"DeleteLoadBalancer":             write,
		"DeleteTargetGroup":              write,
		"DeregisterTargets":              write,
		"ModifyCapacityReservation":      write,
		"ModifyListener":                 write,
		"AddListenerCertificates":        write,
		"RemoveListenerCertificates":     write,
		"ModifyListenerAttributes":       write,
		"ModifyLoadBalancerAttributes":   write,
		"ModifyTargetGroup":              write,
		"ModifyTargetGroupAttributes":    write,
		"RegisterTargets":                write,
		"RemoveTags":                     write,
		"SetIpAddressType":               write,
		"SetSecurityGroups":              write,
		"SetSubnets":                     write,
	},
	"sts": {
		"GetCallerIdentity": read,
	},
	"acm": {
		"DescribeCertificate":       read,
		"GetCertificate":            read,
		"ListCertificates":          read,
		"ListTagsForCertificate":    read,
		"AddTagsToCertificate":      write,
		"DeleteCertificate":         write,
		"ImportCertificate":         write,
		"RemoveTagsFromCertificate": write,
	},
	"shield": {
		"GetSubscriptionState": read,
	},
	taggingSigningName: {
		"GetResources": read,
	},
	moatSigningName: {
		"Explain": read,
	},
}

// checkAccess refuses a read-only key every action that is not a read: ok is false, and denied
// says why as AWS words it for a user whom no policy allows the action (the profile stands for
// the IAM user). The caller answers with its protocol's authorization error. It runs before
// DryRun is looked at: AWS answers a dry run that the caller may not make with
// UnauthorizedOperation, not DryRunOperation.
func (s *Server) checkAccess(service, action string, id sigv4.Identity) (denied string, ok bool) {
	if !id.ReadOnly || actionAccess[service][action] == read {
		return "", true
	}
	return "User: arn:aws:iam::" + s.cloud.Config().AccountID + ":user/" + id.Profile +
		" is not authorized to perform: " + iamAction(service, action) +
		" because its profile is read-only (moat_read_only)", false
}
