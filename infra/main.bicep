// o16n on Azure Functions Flex Consumption (see README "Deploying to Azure"). `azd up` deploys it:
// azure.yaml names this folder; main.parameters.json says where each parameter comes from.
//
// What the app's identity (system-assigned) may do, and nothing more:
//   data account (st<token>)       Storage Blob/Table/Queue Data Contributor: the app's snapshots, metadata and
//                                  batch queue, and the Functions host's own storage (AzureWebJobsStorage)
//   deployment account (stpkg...)  Storage Blob Data Contributor on the one container holding the package
//   Key Vault                      Key Vault Secrets User: reads the signing keys and the admin password
//   Application Insights           Monitoring Metrics Publisher: telemetry with local auth off
targetScope = 'resourceGroup'

@description('Short environment name; resource names are derived from it.')
@minLength(2)
@maxLength(16)
param environmentName string

@description('Azure region for every resource.')
param location string = resourceGroup().location

// azd generates these once (48 letters and digits) and keeps them in .azure/<env>/config.json, so a
// later `azd provision` passes the same keys: a new snapshot key would make every stored workspace
// unreadable. azd's $(secretOrRandomPassword) gives only 15 characters, too short for the app (32).
@metadata({ azd: { type: 'generate', config: { length: 48, noSpecial: true } } })
@description('HS256 key for the access tokens POST /login issues (at least 32 characters).')
@secure()
@minLength(32)
param tokenSigningKey string

@metadata({ azd: { type: 'generate', config: { length: 48, noSpecial: true } } })
@description('HMAC key that seals stored workspaces (at least 32 characters).')
@secure()
@minLength(32)
param snapshotSigningKey string

@description('During a rotation, the token key being replaced (still verifies, never signs); empty otherwise.')
@secure()
param tokenSigningKeyPrevious string = ''

@description('During a rotation, the snapshot key being replaced (still verifies, never seals); empty otherwise.')
@secure()
param snapshotSigningKeyPrevious string = ''

@description('The local admin password: a hash from `python -m shared.passwords`, or a plain password of 12+ characters; empty disables the account.')
@secure()
param localAdminPassword string = ''

@description('Entra ID tenant whose access tokens the API accepts (empty: only o16n login tokens).')
param aadTenantId string = ''

@description('This API\'s audience in Entra ID: its application id and/or App ID URI, comma-separated.')
param aadAudience string = ''

@description('The web page\'s own Entra app registration (a single-page application with redirect URI https://<app>.azurewebsites.net/); with aadTenantId and aadAudience, the page at / offers Entra sign-in. Empty: local accounts only.')
param aadSpaClientId string = ''

@description('Maximum instances Flex Consumption may scale out to.')
param maximumInstanceCount int = 40

@description('Memory of one instance; the app\'s worker pools are sized from it (see `pools`).')
@allowed([2048, 4096])
param instanceMemoryMB int = 2048

@description('HTTP requests one instance takes at once (0: derived from instanceMemoryMB).')
@minValue(0)
@maxValue(1000)
param httpPerInstanceConcurrency int = 0

@description('Who runs `azd up` (AZURE_PRINCIPAL_ID): may read the vault\'s secrets (admin password; azd reads it back on the next provision). Empty: nobody.')
param deployerPrincipalId string = ''

var token = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))
var tags = { 'azd-env-name': environmentName }
var deploymentContainer = 'deployments'
var batchQueue = 'o16n-batch'

// Sizing. One instance holds the Functions host and the API (~300 MB), WORKER_TEMPLATES templates
// (~110 MB each, their pages shared with the workers they fork) and the workers: a warm worker with
// scikit-learn imported is ~160 MB (PSS). WARM_SERVICES_MB bounds warm service workers together;
// sessions and spares are bounded by count. What is left covers a service worker that passes the
// budget during a call (WORKER_MEMORY_MB caps any one of them; a single-threaded worker with the
// preloaded modules maps ~340 MB of address space, so 1024 leaves it room).
//   2048 MB: 300 + 2 x 110 + 640 (4 services) + 2 x 160 (sessions) + 1 x 160 (spare) = 1640, 408 left
//   4096 MB: 300 + 3 x 110 + 1600 (10 services) + 4 x 160 (sessions) + 2 x 160 (spares) = 3190, 906 left
// HTTP concurrency: a call holds an API thread while its worker runs (one core at 2048 MB, two at
// 4096 MB); past that, calls only queue inside an instance, so let Flex scale out instead.
var poolsBySize = {
  '2048': {
    maxWarmServices: 4
    warmServicesMB: 640
    maxWarmSessions: 2
    spareWorkers: 1
    workerTemplates: 2
    workerMemoryMB: 1024
    httpConcurrency: 8
    pythonThreads: 14 // httpConcurrency + 6: see PYTHON_THREADPOOL_THREAD_COUNT
  }
  '4096': {
    maxWarmServices: 10
    warmServicesMB: 1600
    maxWarmSessions: 4
    spareWorkers: 2
    workerTemplates: 3
    workerMemoryMB: 2048
    httpConcurrency: 16
    pythonThreads: 22
  }
}
var pools = poolsBySize[string(instanceMemoryMB)]

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${token}'
  location: location
  tags: tags
  properties: { sku: { name: 'PerGB2018' }, retentionInDays: 30 }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${token}'
  location: location
  tags: tags
  kind: 'web'
  properties: { Application_Type: 'web', WorkspaceResourceId: logs.id, DisableLocalAuth: true }
}

// The app's data (blobs, tables, the batch queue) and the Functions host's storage: the batch
// function's trigger reads BATCH_QUEUE through AzureWebJobsStorage while the app sends to it through
// STORAGE_QUEUE_ENDPOINT, so both must be this account.
resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  //checkov:skip=CKV_AZURE_35:Flex Consumption here runs without a VNet, so the platform reaches it over the public endpoint; access is by Entra ID only (shared keys off)
  //checkov:skip=CKV_AZURE_206:LRS keeps the cost down; choose ZRS/GRS per deployment if snapshots must survive a zone or region loss
  //checkov:skip=CKV_AZURE_43:the name is 'st' + uniqueString(): 15 lower-case letters and digits; checkov cannot evaluate it
  name: 'st${token}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }
}

// The deployment package only. Flex Consumption's deployment (OneDeploy, which `azd deploy` calls)
// writes the package into this container with the identity named in functionAppConfig, and the
// platform reads it back with the same identity. So the identity needs write access here: Storage Blob
// Data Reader is not enough. It gets Storage Blob Data Contributor on the one container, not Owner
// on the account, and no access to the data account's keys or other services.
resource packages 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  //checkov:skip=CKV_AZURE_35:Flex Consumption here runs without a VNet, so the platform reaches it over the public endpoint; access is by Entra ID only (shared keys off)
  //checkov:skip=CKV_AZURE_206:the package is rebuilt by `azd deploy`; LRS is enough
  //checkov:skip=CKV_AZURE_43:the name is 'stpkg' + uniqueString(): 18 lower-case letters and digits; checkov cannot evaluate it
  name: 'stpkg${token}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }
  resource blobs 'blobServices' = {
    name: 'default'
    resource deployments 'containers' = {
      name: deploymentContainer
      properties: { publicAccess: 'None' }
    }
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  //checkov:skip=CKV_AZURE_109:Key Vault references from Flex Consumption without a VNet come over the public endpoint; access is by RBAC only
  //checkov:skip=CKV_AZURE_189:same reason as CKV_AZURE_109: public network access is needed without a VNet
  name: 'kv-${token}'
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
  }
}

// One secret per key; the previous keys exist only during a rotation, the admin password only when set.
resource tokenKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  //checkov:skip=CKV_AZURE_41:no expiry: the app reads the key until it is rotated by hand (README); an expired key would stop the app
  parent: vault
  name: 'token-signing-key'
  properties: { value: tokenSigningKey, contentType: 'text/plain' }
}

resource snapshotKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  //checkov:skip=CKV_AZURE_41:no expiry, as for tokenKeySecret
  parent: vault
  name: 'snapshot-signing-key'
  properties: { value: snapshotSigningKey, contentType: 'text/plain' }
}

resource tokenKeyPreviousSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(tokenSigningKeyPrevious)) {
  //checkov:skip=CKV_AZURE_41:no expiry, as for tokenKeySecret
  //checkov:skip=CKV_AZURE_114:contentType is set; checkov does not read properties of a conditional resource
  parent: vault
  name: 'token-signing-key-previous'
  properties: { value: tokenSigningKeyPrevious, contentType: 'text/plain' }
}

resource snapshotKeyPreviousSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(snapshotSigningKeyPrevious)) {
  //checkov:skip=CKV_AZURE_41:no expiry, as for tokenKeySecret
  //checkov:skip=CKV_AZURE_114:contentType is set; checkov does not read properties of a conditional resource
  parent: vault
  name: 'snapshot-signing-key-previous'
  properties: { value: snapshotSigningKeyPrevious, contentType: 'text/plain' }
}

resource adminPasswordSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(localAdminPassword)) {
  //checkov:skip=CKV_AZURE_41:no expiry, as for tokenKeySecret
  //checkov:skip=CKV_AZURE_114:contentType is set; checkov does not read properties of a conditional resource
  parent: vault
  name: 'local-admin-password'
  properties: { value: localAdminPassword, contentType: 'text/plain' }
}

// App settings read secrets through Key Vault references (versionless: the newest version, re-read
// when the site's configuration changes, as every `azd provision` does).
var kvRef = '@Microsoft.KeyVault(SecretUri='

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  //checkov:skip=CKV_AZURE_225:zone redundancy on Flex Consumption needs a supporting region and always-ready instances (billed while idle)
  name: 'plan-${token}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: { name: 'FC1', tier: 'FlexConsumption' }
  properties: { reserved: true }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  //checkov:skip=CKV_AZURE_222:the API is public by design; callers authenticate with bearer tokens
  //checkov:skip=CKV_AZURE_17:callers authenticate with bearer tokens (o16n login or Entra ID), not client certificates
  //checkov:skip=CKV_AZURE_212:scale from zero is intended: always-ready instances are billed while idle
  //checkov:skip=CKV_AZURE_213:a platform health check would call every instance every minute, keeping it busy and billed; GET /status serves an external probe
  name: 'func-${token}'
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: { type: 'SystemAssigned' }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${packages.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: { type: 'SystemAssignedIdentity' }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        triggers: { http: { perInstanceConcurrency: httpPerInstanceConcurrency > 0 ? httpPerInstanceConcurrency : pools.httpConcurrency } }
      }
      runtime: { name: 'python', version: '3.11' }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: [
        // The Functions host's storage, by identity: blobs (leases, host keys), queues (the batch
        // trigger and its poison queue). The data account's three Data Contributor roles cover it.
        { name: 'AzureWebJobsStorage__accountName', value: storage.name }
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insights.properties.ConnectionString }
        { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'Authorization=AAD' }
        { name: 'STORAGE_BLOB_ENDPOINT', value: storage.properties.primaryEndpoints.blob }
        { name: 'STORAGE_TABLE_ENDPOINT', value: storage.properties.primaryEndpoints.table }
        { name: 'STORAGE_QUEUE_ENDPOINT', value: storage.properties.primaryEndpoints.queue }
        // The batch function's trigger reads the queue through AzureWebJobsStorage (the identity
        // above); the app sends to it through STORAGE_QUEUE_ENDPOINT. Both name the same queue.
        { name: 'BATCH_QUEUE', value: batchQueue }
        { name: 'STORAGE_PREFIX', value: 'o16n' }
        { name: 'TOKEN_SIGNING_KEY', value: '${kvRef}${tokenKeySecret.properties.secretUri})' }
        { name: 'SNAPSHOT_SIGNING_KEY', value: '${kvRef}${snapshotKeySecret.properties.secretUri})' }
        { name: 'TOKEN_SIGNING_KEY_PREVIOUS', value: empty(tokenSigningKeyPrevious) ? '' : '${kvRef}${tokenKeyPreviousSecret.properties.secretUri})' }
        { name: 'SNAPSHOT_SIGNING_KEY_PREVIOUS', value: empty(snapshotSigningKeyPrevious) ? '' : '${kvRef}${snapshotKeyPreviousSecret.properties.secretUri})' }
        { name: 'LOCAL_ADMIN_PASSWORD', value: empty(localAdminPassword) ? '' : '${kvRef}${adminPasswordSecret.properties.secretUri})' }
        { name: 'AAD_TENANT_ID', value: aadTenantId }
        { name: 'AAD_AUDIENCE', value: aadAudience }
        { name: 'AAD_SPA_CLIENT_ID', value: aadSpaClientId }
        // Said here rather than left to defaults: an Entra user without an app role gets nothing, and
        // user code runs only under Landlock + seccomp.
        { name: 'AAD_DEFAULT_ROLE', value: 'none' }
        { name: 'SANDBOX', value: 'strict' }
        // GET / is the app's web page (functions/web.py); were it ever not matched, an empty 204
        // rather than the Functions landing page.
        { name: 'AzureWebJobsDisableHomepage', value: 'true' }
        { name: 'EXECUTION_TIMEOUT_SECONDS', value: '60' }
        // Sync handlers and batch lanes share the Python worker's thread pool, min(32, CPUs + 4) by
        // default (6 on 2 cores): a thread for each HTTP request taken at once, plus the 6 queue
        // messages host.json lets an instance run (batchSize 4 + newBatchThreshold 2). Raise it
        // with httpPerInstanceConcurrency.
        { name: 'PYTHON_THREADPOOL_THREAD_COUNT', value: string(pools.pythonThreads) }
        { name: 'MAX_WARM_SERVICES', value: string(pools.maxWarmServices) }
        { name: 'WARM_SERVICES_MB', value: string(pools.warmServicesMB) }
        { name: 'MAX_WARM_SESSIONS', value: string(pools.maxWarmSessions) }
        { name: 'SPARE_WORKERS', value: string(pools.spareWorkers) }
        { name: 'WORKER_TEMPLATES', value: string(pools.workerTemplates) }
        { name: 'WORKER_MEMORY_MB', value: string(pools.workerMemoryMB) }
      ]
    }
  }
}

// No FTP and no basic-auth deployment: `azd deploy` authenticates to the deployment endpoint with Entra ID.
resource ftpPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'ftp'
  properties: { allow: false }
}

resource scmPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'scm'
  properties: { allow: false }
}

// Built-in role definition ids.
var roles = {
  blobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe' // Storage Blob Data Contributor
  tableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3' // Storage Table Data Contributor
  queueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // Storage Queue Data Contributor
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6' // Key Vault Secrets User
  metricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb' // Monitoring Metrics Publisher
}

// Data account: snapshots and host blobs (Blob Data Owner adds only ACL and ownership rights of
// hierarchical-namespace accounts, which this is not), metadata tables, the batch queue and its
// poison queue (the host creates and deletes messages there).
resource blobRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, app.id, roles.blobDataContributor)
  scope: storage
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobDataContributor)
  }
}

resource tableRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, app.id, roles.tableDataContributor)
  scope: storage
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.tableDataContributor)
  }
}

resource queueRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, app.id, roles.queueDataContributor)
  scope: storage
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.queueDataContributor)
  }
}

// Deployment account: the package container only (see `packages`).
resource packageRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(packages::blobs::deployments.id, app.id, roles.blobDataContributor)
  scope: packages::blobs::deployments
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobDataContributor)
  }
}

resource vaultRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, app.id, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
  }
}

// Application Insights refuses keys (DisableLocalAuth): telemetry is sent with the identity.
resource metricsRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(insights.id, app.id, roles.metricsPublisher)
  scope: insights
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.metricsPublisher)
  }
}

// Whoever runs `azd up` reads the admin password (azd reads it back on the next provision): that
// one secret, not the signing keys.
resource deployerVaultRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId) && !empty(localAdminPassword)) {
  name: guid(vault.id, deployerPrincipalId, roles.keyVaultSecretsUser)
  scope: adminPasswordSecret
  properties: {
    principalId: deployerPrincipalId
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
  }
}

output FUNCTION_APP_NAME string = app.name
output API_URL string = 'https://${app.properties.defaultHostName}'
output STORAGE_ACCOUNT_NAME string = storage.name
output AZURE_KEY_VAULT_NAME string = vault.name
output AZURE_KEY_VAULT_ENDPOINT string = vault.properties.vaultUri
