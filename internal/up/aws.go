package up

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"

	"github.com/moatlb/moat/internal/awsclient"
	"github.com/moatlb/moat/internal/lb"
)

const region = "us-east-1"

// awsClients talks to moat lb with the key it generated. The key is read from its credentials
// file and given explicitly, so that AWS_* variables in the user's environment cannot redirect it.
type awsClients struct {
	ec2   *ec2.Client
	elbv2 *elbv2.Client
}

func newAWSClients(ctx context.Context, eps lb.Endpoints) (*awsClients, error) {
	sc, err := config.LoadSharedConfigProfile(ctx, "default", func(o *config.LoadSharedConfigOptions) {
		o.CredentialsFiles = []string{eps.CredentialsFile}
		o.ConfigFiles = []string{}
	})
	if err != nil {
		return nil, fmt.Errorf("credentials %s: %w", eps.CredentialsFile, err)
	}
	cfg, err := config.LoadDefaultConfig(ctx,
		config.WithRegion(region),
		config.WithCredentialsProvider(credentials.StaticCredentialsProvider{Value: sc.Credentials}),
		config.WithSharedConfigFiles([]string{}),
		config.WithSharedCredentialsFiles([]string{}),
	)
	if err != nil {
		return nil, err
	}
	cfg.HTTPClient = awsclient.HTTPClient(cfg.HTTPClient)
	return &awsClients{
		ec2:   ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(eps.API) }),
		elbv2: elbv2.NewFromConfig(cfg, func(o *elbv2.Options) { o.BaseEndpoint = aws.String(eps.API) }),
	}, nil
}

// vpcID is the VPC the controller manages: the default VPC of moat lb's inventory.
func (a *awsClients) vpcID(ctx context.Context) (string, error) {
	out, err := a.ec2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{})
	if err != nil {
		return "", fmt.Errorf("describe VPCs: %w", err)
	}
	for _, v := range out.Vpcs {
		if aws.ToBool(v.IsDefault) {
			return aws.ToString(v.VpcId), nil
		}
	}
	if len(out.Vpcs) == 0 {
		return "", fmt.Errorf("moat lb has no VPC")
	}
	return aws.ToString(out.Vpcs[0].VpcId), nil
}

// controllerEnv is moat up's environment for the controller child, with AWS settings that could
// point the standard credential chain elsewhere removed, and moat lb's credentials file in their
// place.
func controllerEnv(credsFile, awsConfigFile string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AWS_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"AWS_SHARED_CREDENTIALS_FILE="+credsFile,
		"AWS_CONFIG_FILE="+awsConfigFile,
		"AWS_REGION="+region,
		"AWS_EC2_METADATA_DISABLED=true",
	)
}
