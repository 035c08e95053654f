//! Credentials as real CLIs take them, one command line per form, each with a secret of its own
//! that must never reach a statement; and harmless look-alikes that must stay readable. No form
//! pushes (a push seen in a run is resolved against its registry), and every address is
//! 127.0.0.1 or a name that is never looked up. The
//! unit test of the redaction rules and the traced end-to-end test (`tests/ci_secrets.rs`) read
//! this one table.

use base64::Engine as _;

/// One way a real CLI is given a credential.
#[derive(Clone, Debug)]
pub struct Form {
    /// `tool: what`, for failure messages.
    pub name: String,
    pub argv: Vec<String>,
    /// The text that must not appear anywhere in the statement.
    pub secret: String,
}

/// The secret of form `index`: unique, and never a substring of another form's secret.
fn secret(index: usize) -> String {
    format!("Qz{index:03}sEcReT")
}

/// Every form, in the order of the table below.
pub fn forms() -> Vec<Form> {
    let basic = |user: &str, index: usize| {
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", secret(index)))
    };
    // `{}` in a template is the form's secret; `{b64}` the base64 of `ci:<secret>`.
    let table: &[(&str, &str)] = &[
        ("curl: -u user:password", "curl -u alice:{} https://h.example/"),
        ("curl: --user=user:password", "curl --user=alice:{} https://h.example/"),
        ("curl: Bearer header", "curl -H|Authorization: Bearer {}|https://h.example/"),
        ("curl: Basic header (base64)", "curl -H|Authorization: Basic {b64}|https://h.example/"),
        ("curl: X-Api-Key header", "curl -H|X-Api-Key: {}|https://h.example/"),
        ("curl: Cookie header", "curl -H|Cookie: theme=dark; session={}|https://h.example/"),
        ("curl: -b cookie", "curl -b session={} https://h.example/"),
        ("curl: --oauth2-bearer", "curl --oauth2-bearer {} https://h.example/"),
        ("curl: access_token query", "curl https://h.example/f?page=2&access_token={}"),
        ("curl: -E cert:password", "curl -E client.pem:{} https://h.example/"),
        ("curl: proxy userinfo", "curl -x http://proxyuser:{}@127.0.0.1:3128 https://h.example/"),
        ("curl: form client_secret", "curl -d client_secret={}&grant_type=client_credentials https://h.example/token"),
        ("curl: PRIVATE-TOKEN header", "curl -H|PRIVATE-TOKEN: {}|https://gitlab.example/api/v4/user"),
        ("curl: Proxy-Authorization", "curl --proxy-header|Proxy-Authorization: Basic {b64}|https://h.example/"),
        ("wget: --password=", "wget --password={} https://h.example/f"),
        ("wget: --http-password value", "wget --http-user=u --http-password {} https://h.example/f"),
        ("wget: --header token", "wget |--header=Authorization: token {}| https://h.example/f"),
        ("wget: presigned S3 URL", "wget https://b.s3.example/k?X-Amz-Credential=AKIA{}&X-Amz-Signature=ab{}cd"),
        ("wget: ftp userinfo", "wget ftp://u:{}@127.0.0.1/f"),
        ("git: token in clone URL", "git clone https://x-access-token:{}@github.com/o/r.git"),
        ("git: -c http.extraheader", "git -c |http.extraheader=AUTHORIZATION: basic {b64}| fetch"),
        ("git: -c per-URL extraHeader", "git -c|http.https://github.com/.extraheader=Authorization: Bearer {}|push"),
        ("git: token push URL", "git push https://oauth2:{}@gitlab.example/o/r.git"),
        ("docker: login -p", "docker login -u ci -p {} registry.example"),
        ("docker: login --password=", "docker login --password={} -u ci registry.example"),
        ("docker: run -e NAME=value", "docker run -e API_TOKEN={} alpine"),
        ("docker: --build-arg", "docker build --build-arg NPM_TOKEN={} ."),
        ("docker: --env=NAME=value", "docker run --env=DB_PASSWORD={} alpine"),
        ("podman: login -p", "podman login -u ci -p {} registry.example"),
        ("podman: --env NAME=value", "podman run --env GITHUB_TOKEN={} alpine"),
        ("podman: login --password", "podman login --password {} registry.example"),
        ("skopeo: --src-creds", "skopeo copy --src-creds u:{} docker://127.0.0.1:9/a/b oci:c"),
        ("skopeo: --creds=", "skopeo inspect --creds=u:{} docker://127.0.0.1:9/a/b"),
        ("skopeo: --src-registry-token", "skopeo copy --src-registry-token {} docker://127.0.0.1:9/a/b oci:c"),
        ("skopeo: login -p", "skopeo login -u u -p {} registry.example"),
        ("buildah: login -p", "buildah login -p {} -u u registry.example"),
        ("buildah: pull --creds", "buildah pull --creds u:{} 127.0.0.1:9/img"),
        ("helm: registry login -p", "helm registry login r.example -u u -p {}"),
        ("helm: repo add --password", "helm repo add n https://charts.example --username u --password {}"),
        ("helm: --set db.password", "helm install app ./chart --set db.password={}"),
        ("helm: --set-string apiKey", "helm upgrade app ./chart --set-string apiKey={}"),
        ("kubectl: --token=", "kubectl --token={} get pods"),
        ("kubectl: secret --from-literal", "kubectl create secret generic s --from-literal=api={}"),
        ("kubectl: --docker-password", "kubectl create secret docker-registry r --docker-password={}"),
        ("kubectl: set-credentials --password", "kubectl config set-credentials u --password={}"),
        ("aws: configure set secret key", "aws configure set aws_secret_access_key {}"),
        ("aws: env prefix", "env AWS_SECRET_ACCESS_KEY={} aws s3 ls"),
        ("aws: --sse-c-key", "aws s3 cp f s3://b/k --sse-c-key {}"),
        ("gcloud: sql --password", "gcloud sql users set-password root --instance=i --password={}"),
        ("gcloud: --encryption-key", "gcloud storage cp f gs://b --encryption-key={}"),
        ("az: login -p", "az login --service-principal -u app -p {} --tenant t"),
        ("az: --account-key", "az storage blob upload --account-key {} -f f"),
        ("az: connection string", "az storage blob upload --connection-string DefaultEndpointsProtocol=https;AccountName=a;AccountKey={};EndpointSuffix=core.windows.net"),
        ("az: --sas-token", "az storage blob download --sas-token se=2030-01-01&sig={}"),
        ("az: keyvault secret --value", "az keyvault secret set --vault-name v --name n --value {}"),
        ("npm: --_authToken flag", "npm publish --//registry.npmjs.org/:_authToken={}"),
        ("npm: config set _authToken", "npm config set //registry.npmjs.org/:_authToken {}"),
        ("npm: --otp", "npm publish --otp {}"),
        ("pip: --index-url userinfo", "pip install --index-url https://u:{}@pypi.example/simple pkg"),
        ("pip: --extra-index-url token", "pip install --extra-index-url https://__token__:{}@h.example/simple x"),
        ("twine: -p", "twine upload -u __token__ -p {} dist/x.whl"),
        ("twine: --password", "twine upload --password {} dist/x.whl"),
        ("gh: secret set --body", "gh secret set DEPLOY --body {}"),
        ("gh: api token header", "gh api -H|Authorization: token {}|/user"),
        ("gh: env GH_TOKEN", "env GH_TOKEN={} gh pr list"),
        ("mysql: -pVALUE", "mysql -u root -p{} appdb"),
        ("mysql: --password=", "mysql --password={} -u root appdb"),
        ("mysqldump: -pVALUE", "mysqldump -uroot -p{} appdb"),
        ("psql: URL", "psql postgresql://app:{}@127.0.0.1/db"),
        ("psql: conninfo password=", "psql|host=127.0.0.1 user=app password={}"),
        ("psql: env PGPASSWORD", "env PGPASSWORD={} psql -h 127.0.0.1"),
        ("redis-cli: -a value", "redis-cli -a {} ping"),
        ("redis-cli: -aVALUE", "redis-cli -a{} ping"),
        ("redis-cli: -u URL", "redis-cli -u redis://default:{}@127.0.0.1:6379 ping"),
        ("redis-cli: AUTH", "redis-cli AUTH default {}"),
        ("redis-cli: CONFIG SET requirepass", "redis-cli CONFIG SET requirepass {}"),
        ("openssl: -passout pass:", "openssl pkcs12 -export -passout pass:{} -in c.pem -out p.p12"),
        ("openssl: -passin pass:", "openssl rsa -passin pass:{} -in k.pem"),
        ("openssl: enc -k", "openssl enc -aes-256-cbc -k {} -in f"),
        ("openssl: enc -K", "openssl enc -aes-256-cbc -K {} -iv 00 -in f"),
        ("sshpass: -p value", "sshpass -p {} ssh host.example"),
        ("sshpass: -pVALUE", "sshpass -p{} scp f host.example:"),
        ("vault: login TOKEN", "vault login {}"),
        ("vault: kv put", "vault kv put secret/app api={}"),
        ("vault: approle secret_id", "vault write auth/approle/login role_id=r secret_id={}"),
        ("vault: userpass password=", "vault login -method=userpass username=u password={}"),
        ("terraform: -var value", "terraform apply -var db_password={}"),
        ("terraform: -var=", "terraform apply -var=api_token={}"),
        ("terraform: -backend-config", "terraform init -backend-config=password={}"),
        ("terraform: TF_VAR_ env", "env TF_VAR_db_password={} terraform plan"),
        ("htpasswd: -b", "htpasswd -b -c .htpasswd user {}"),
        ("htpasswd: -nbB", "htpasswd -nbB user {}"),
        ("cosign: --key material", "cosign sign --key {} r.example/img"),
        ("az: acr login -p", "az acr login -n r -u u -p {}"),
    ];
    table
        .iter()
        .enumerate()
        .map(|(index, (name, template))| {
            let secret = secret(index);
            let encoded = basic("ci", index);
            let fill = |word: &str| word.replace("{b64}", &encoded).replace("{}", &secret);
            // `|` separates words that contain spaces; otherwise words are space-separated.
            let argv: Vec<String> = if template.contains('|') {
                template
                    .split('|')
                    .enumerate()
                    .flat_map(|(part, text)| {
                        if part % 2 == 1 {
                            vec![fill(text)]
                        } else {
                            text.split_whitespace().map(fill).collect()
                        }
                    })
                    .collect()
            } else {
                template.split_whitespace().map(fill).collect()
            };
            let secret = if template.contains("{b64}") {
                encoded
            } else {
                secret
            };
            Form {
                name: (*name).to_owned(),
                argv,
                secret,
            }
        })
        .collect()
}

/// `argv` as one shell command line, each word quoted where the shell needs it.
pub fn shell_line(argv: &[String]) -> String {
    argv.iter()
        .map(|word| {
            let plain = !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_./:=@%+,-".contains(c));
            if plain {
                word.clone()
            } else {
                format!("'{}'", word.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Command lines that look like credentials but are not: each must be recorded word for word.
pub fn look_alikes() -> Vec<Vec<String>> {
    [
        "mkdir -p dir-control",
        "tar -a -cf control.tar.gz dir-control",
        "cosign sign --key-file /keys/control-key.pem r.example/img",
        "gcloud auth activate-service-account --key-file=/keys/sa-control.json",
        "curl --key client-control.pem https://h.example/",
        "docker run -p 8080:80 -u 1000:1000 control-image",
        "docker login --password-stdin -u ci-user registry.example",
        "docker build --secret id=npm,env=NPM_TOKEN control-dir",
        "openssl rsa -passin env:CONTROL_VAR -in control.pem",
        "aws configure set region eu-control-1",
        "helm install app ./chart --set image.tag=control-tag",
        "terraform apply -var region=control-region",
        "gpg --keyring /keys/control.gpg --list-keys",
        "kubectl get secret control-secret-name",
        "cp --parents a/control b",
    ]
    .iter()
    .map(|line| line.split_whitespace().map(str::to_owned).collect())
    .collect()
}
