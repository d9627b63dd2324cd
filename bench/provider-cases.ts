/** One benchmark case per trust-provider type: a provider instance, a valid attestation, its fakes. */
import type { ProviderDeps, TrustProvider } from '../src/trust-providers/trust-provider.js';
import { JWT_TOKEN_TYPES } from '../src/lib/urns.js';
import { oidcPlugin, OidcConfigSchema } from '../src/trust-providers/oidc/oidc-provider.js';
import { githubActionsPlugin, GithubActionsConfigSchema } from '../src/trust-providers/github-actions/github-actions-provider.js';
import { gcpPlugin, GcpConfigSchema } from '../src/trust-providers/gcp/gcp-provider.js';
import { azurePlugin, AzureConfigSchema } from '../src/trust-providers/azure/azure-provider.js';
import { startFakeOidcIssuer } from '../test/fakes/oidc-issuer.js';
import { startFakeCloudKeys } from '../test/fakes/gcp-azure-keys.js';
import { kubernetesPlugin, KubernetesConfigSchema } from '../src/trust-providers/kubernetes/kubernetes-provider.js';
import { awsIamPlugin, AwsIamConfigSchema } from '../src/trust-providers/aws-iam/aws-iam-provider.js';
import { createAwsIamAttestation } from '../src/trust-providers/aws-iam/attest.js';
import { awsEc2Plugin, AwsEc2ConfigSchema } from '../src/trust-providers/aws-ec2/aws-ec2-provider.js';
import { TOKEN_TYPE } from '../src/lib/urns.js';
import { startFakeKubernetesApi } from '../test/fakes/kubernetes-api.js';
import { startFakeSts } from '../test/fakes/aws-sts.js';
import { createEc2Signer, documentText, ec2Document, ec2Token } from '../test/fakes/aws-ec2-documents.js';

export interface ProviderCase {
  type: string;
  label: string;
  notes?: string;
  setup(deps: ProviderDeps): Promise<{
    provider: TrustProvider;
    attestation?: { token: string; tokenType: string };
    /** For single-use attestations: makes a fresh one. */
    fresh?: () => Promise<{ token: string; tokenType: string }>;
    close(): Promise<void>;
  }>;
}

const JWT = JWT_TOKEN_TYPES[0]!;
const TENANT = '72f988bf-86f1-41af-91ab-2d7cd011db47';

export const providerCases: ProviderCase[] = [
  {
    type: 'oidc',
    label: 'oidc (remote JWKS, RS256)',
    async setup(deps) {
      const issuer = await startFakeOidcIssuer();
      const provider = oidcPlugin.create('bench', OidcConfigSchema.parse({ issuer: issuer.issuer, audience: 'sts', subjectTemplate: 'b://{sub}' }), deps);
      return { provider, attestation: { token: await issuer.sign({ sub: 'agent', aud: 'sts' }), tokenType: JWT }, close: () => issuer.close() };
    },
  },
  {
    type: 'github-actions',
    label: 'github-actions (RS256)',
    async setup(deps) {
      const issuer = await startFakeOidcIssuer();
      const provider = githubActionsPlugin.create('bench', GithubActionsConfigSchema.parse({ issuer: issuer.issuer, audience: 'agent-sts' }), deps);
      const token = await issuer.sign({
        sub: 'repo:acme/app:ref:refs/heads/main', aud: 'agent-sts', repository: 'acme/app', repository_id: '42', repository_owner: 'acme',
        repository_owner_id: '7', ref: 'refs/heads/main', ref_type: 'branch', event_name: 'push', job_workflow_ref: 'acme/app/.github/workflows/ci.yml@refs/heads/main',
      });
      return { provider, attestation: { token, tokenType: JWT }, close: () => issuer.close() };
    },
  },
  {
    type: 'gcp',
    label: 'gcp (format=full, RS256)',
    async setup(deps) {
      const keys = await startFakeCloudKeys('/oauth2/v3/certs');
      const provider = gcpPlugin.create('bench', GcpConfigSchema.parse({ audience: 'https://sts.test', jwksUri: keys.jwksUri }), deps);
      const token = await keys.sign({
        iss: 'https://accounts.google.com', aud: 'https://sts.test', sub: '1109', azp: '1109', email: 'a@p.iam.gserviceaccount.com', email_verified: true,
        google: { compute_engine: { project_id: 'acme', project_number: 1, zone: 'z', instance_id: '1', instance_name: 'vm' } },
      });
      return { provider, attestation: { token, tokenType: JWT }, close: () => keys.close() };
    },
  },
  {
    type: 'azure',
    label: 'azure (managed identity, RS256)',
    async setup(deps) {
      const keys = await startFakeCloudKeys('/common/discovery/v2.0/keys');
      const provider = azurePlugin.create('bench', AzureConfigSchema.parse({ tenants: [TENANT], audience: 'api://agent-sts', jwksUri: keys.jwksUri }), deps);
      const token = await keys.sign({
        iss: `https://sts.windows.net/${TENANT}/`, aud: 'api://agent-sts', tid: TENANT, oid: '11111111-2222-3333-4444-555555555555', sub: '11111111-2222-3333-4444-555555555555',
        appid: 'c0ffee00-0000-0000-0000-000000000000', idtyp: 'app', ver: '1.0',
        xms_mirid: '/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/vm',
      });
      return { provider, attestation: { token, tokenType: JWT }, close: () => keys.close() };
    },
  },
  {
    type: 'kubernetes',
    label: 'kubernetes (jwks, offline)',
    async setup(deps) {
      const k8s = await startFakeKubernetesApi();
      const provider = kubernetesPlugin.create('bench', KubernetesConfigSchema.parse({ clusterName: 'prod', audience: 'sts', issuer: k8s.issuer, mode: 'jwks', jwksUri: k8s.publicJwksUri }), deps);
      return { provider, attestation: { token: await k8s.mint({ audiences: ['sts'] }), tokenType: JWT }, close: () => k8s.close() };
    },
  },
  {
    type: 'kubernetes',
    label: 'kubernetes (tokenreview over HTTPS)',
    notes: 'one TokenReview round trip per verification (fake API server in-process); reviewCacheTtl 0',
    async setup(deps) {
      const k8s = await startFakeKubernetesApi();
      const provider = kubernetesPlugin.create('bench', KubernetesConfigSchema.parse({ clusterName: 'prod', audience: 'sts', issuer: k8s.issuer, mode: 'tokenreview', kubeconfig: k8s.kubeconfigPath, jwksUri: k8s.publicJwksUri }), deps);
      return { provider, attestation: { token: await k8s.mint({ audiences: ['sts'] }), tokenType: JWT }, close: () => k8s.close() };
    },
  },
  {
    type: 'aws-iam',
    label: 'aws-iam (signed GetCallerIdentity)',
    notes: 'one STS round trip; the in-process fake recomputes SigV4; attestations are single-use',
    async setup(deps) {
      const key = { accessKeyId: 'AKIABENCHBENCHBENCH1', secretAccessKey: 'bench/secret/key/0123456789abcdefghijklmn' };
      const sts = await startFakeSts({ keys: [{ ...key, identity: { type: 'assumed-role', account: '111122223333', roleName: 'agent', roleId: 'AROABENCH', sessionName: 's' } }] });
      const provider = awsIamPlugin.create('bench', AwsIamConfigSchema.parse({ stsEndpoint: sts.url }), deps);
      const fresh = async () => ({ token: await createAwsIamAttestation({ serverId: deps.serverId(), credentials: key }), tokenType: TOKEN_TYPE.awsSigv4Gci });
      return { provider, fresh, close: () => sts.close() };
    },
  },
  {
    type: 'aws-ec2',
    label: 'aws-ec2 (RSA-2048 PKCS#7 document)',
    notes: 'allowReuse: true (single use would stop the loop after one)',
    async setup(deps) {
      const signer = createEc2Signer();
      const provider = awsEc2Plugin.create('bench', AwsEc2ConfigSchema.parse({ certificates: { 'us-east-1': signer.certificatePem }, allowReuse: true }), deps);
      const text = documentText(ec2Document());
      return { provider, attestation: { token: ec2Token(text, signer.sign(text)), tokenType: TOKEN_TYPE.awsEc2Identity }, close: async () => {} };
    },
  },
];
