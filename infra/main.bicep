// o16n on Azure Functions Flex Consumption: one storage account for the app's data (tables +
// blobs) and its deployment package, reached with the app's managed identity (no keys).
targetScope = 'resourceGroup'

@description('Short environment name; resource names are derived from it.')
@minLength(2)
@maxLength(16)
param environmentName string

@description('Azure region for every resource.')
param location string = resourceGroup().location

@description('HS256 key for the access tokens POST /login issues (at least 32 characters).')
@secure()
@minLength(32)
param tokenSigningKey string

@description('HMAC key that seals stored workspaces (at least 32 characters).')
@secure()
@minLength(32)
param snapshotSigningKey string

@description('The local admin password as a hash from `python -m shared.passwords` (or a plain password of 12+ characters); empty disables the account.')
@secure()
param localAdminPassword string = ''

@description('Entra ID tenant whose access tokens the API accepts (empty: only o16n login tokens).')
param aadTenantId string = ''

@description('This API\'s audience in Entra ID: its application id and/or App ID URI, comma-separated.')
param aadAudience string = ''

@description('Maximum instances Flex Consumption may scale out to.')
param maximumInstanceCount int = 40

@allowed([2048, 4096])
param instanceMemoryMB int = 2048

var token = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))
var tags = { 'azd-env-name': environmentName }
var deploymentContainer = 'deployments'

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

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'st${token}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }
  resource blobs 'blobServices' = {
    name: 'default'
    resource deployments 'containers' = { name: deploymentContainer }
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-${token}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: { name: 'FC1', tier: 'FlexConsumption' }
  properties: { reserved: true }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: 'func-${token}'
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: { type: 'SystemAssigned' }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: { type: 'SystemAssignedIdentity' }
        }
      }
      scaleAndConcurrency: { maximumInstanceCount: maximumInstanceCount, instanceMemoryMB: instanceMemoryMB }
      runtime: { name: 'python', version: '3.11' }
    }
    siteConfig: {
      appSettings: [
        { name: 'AzureWebJobsStorage__accountName', value: storage.name }
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insights.properties.ConnectionString }
        { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'Authorization=AAD' }
        { name: 'STORAGE_BLOB_ENDPOINT', value: storage.properties.primaryEndpoints.blob }
        { name: 'STORAGE_TABLE_ENDPOINT', value: storage.properties.primaryEndpoints.table }
        { name: 'STORAGE_QUEUE_ENDPOINT', value: storage.properties.primaryEndpoints.queue }
        // The batch function's trigger reads the queue through AzureWebJobsStorage (the identity
        // above); the app sends to it through STORAGE_QUEUE_ENDPOINT. Both name the same queue.
        { name: 'BATCH_QUEUE', value: 'o16n-batch' }
        { name: 'STORAGE_PREFIX', value: 'o16n' }
        { name: 'TOKEN_SIGNING_KEY', value: tokenSigningKey }
        { name: 'SNAPSHOT_SIGNING_KEY', value: snapshotSigningKey }
        { name: 'LOCAL_ADMIN_PASSWORD', value: localAdminPassword }
        { name: 'AAD_TENANT_ID', value: aadTenantId }
        { name: 'AAD_AUDIENCE', value: aadAudience }
        { name: 'EXECUTION_TIMEOUT_SECONDS', value: '60' }
      ]
    }
  }
}

// Role definition ids are Azure built-in roles.
var roles = {
  blobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b' // Storage Blob Data Owner (host storage, deployments)
  tableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3' // Storage Table Data Contributor (metadata)
  queueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // Storage Queue Data Contributor (batch chunks)
  metricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb' // Monitoring Metrics Publisher (App Insights)
}

resource blobRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, app.id, roles.blobDataOwner)
  scope: storage
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobDataOwner)
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

resource metricsRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(insights.id, app.id, roles.metricsPublisher)
  scope: insights
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.metricsPublisher)
  }
}

output FUNCTION_APP_NAME string = app.name
output API_URL string = 'https://${app.properties.defaultHostName}'
output STORAGE_ACCOUNT_NAME string = storage.name
