<#
.SYNOPSIS
    Registers a PowerShell session configuration named Microsoft.Exchange on the runner's WinRM: a stand-in for
    Exchange's endpoint, so the job sees what Windows PowerShell's own serializer sends to pypsrp for certificate
    objects (the open question of the project's shared real-server-shapes.md, section 2).

.DESCRIPTION
    A restricted session (RestrictedRemoteServer, NoLanguage), as Exchange's endpoint is a no-language one, whose
    visible commands are functions named like the Exchange cmdlets exbe calls. Get-ExchangeCertificate returns the
    real X509Certificate2 objects of LocalMachine\My, with Exchange's type name put first (ExchangeCertificate
    derives from X509Certificate2, and exbe tells objects apart by their type names): how PowerShell serializes
    them is the point. The other answers are property bags with the documented names (section 2: Get-AuthConfig's
    thumbprints as empty strings when unset, its ServiceName and Name), standing for no real server: this is not
    Exchange, and nothing here says how Exchange's own serializer (SerializationData) behaves.
#>
[CmdletBinding()]
param()

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$name = 'ExbeExchangeStandIn'
$functions = @('Get-ExchangeServer', 'Get-ExchangeCertificate', 'Get-AuthConfig', 'Get-SettingOverride', 'Get-TransportService')
$module = Join-Path -Path $env:ProgramFiles -ChildPath ('WindowsPowerShell\Modules\' + $name)
New-Item -ItemType Directory -Path $module -Force | Out-Null
Set-Content -LiteralPath (Join-Path -Path $module -ChildPath ($name + '.psm1')) -Encoding Ascii -Value @'
function Get-ExchangeServer {
    [CmdletBinding()]
    param($Identity, $DomainController)
    $network = [System.Net.NetworkInformation.IPGlobalProperties]::GetIPGlobalProperties()
    $fqdn = $network.HostName
    if ($network.DomainName) {
        $fqdn = $network.HostName + '.' + $network.DomainName
    }
    [pscustomobject]@{ PSTypeName = 'Microsoft.Exchange.Data.Directory.Management.ExchangeServer'; Name = $env:COMPUTERNAME; Fqdn = $fqdn; AdminDisplayVersion = 'exbe CI stand-in'; Edition = 'exbe CI stand-in' }
}

function Get-ExchangeCertificate {
    [CmdletBinding()]
    param($Identity, $Server, $Thumbprint, $DomainController)
    foreach ($certificate in @(Get-ChildItem -Path 'Cert:\LocalMachine\My')) {
        if ($Thumbprint -and $certificate.Thumbprint -ne $Thumbprint) {
            continue
        }
        $certificate.PSObject.TypeNames.Insert(0, 'Microsoft.Exchange.Management.SystemConfigurationTasks.ExchangeCertificate')
        $certificate
    }
}

function Get-AuthConfig {
    [CmdletBinding()]
    param($DomainController)
    [pscustomobject]@{ PSTypeName = 'Microsoft.Exchange.Data.Directory.SystemConfiguration.AuthConfig'; Name = 'Auth Configuration'; ServiceName = '00000002-0000-0ff1-ce00-000000000000'; CurrentCertificateThumbprint = ''; PreviousCertificateThumbprint = ''; NextCertificateThumbprint = '' }
}

function Get-SettingOverride {
    [CmdletBinding()]
    param($Identity, $DomainController)
}

function Get-TransportService {
    [CmdletBinding()]
    param($Identity, $DomainController)
    [pscustomobject]@{ PSTypeName = 'Microsoft.Exchange.Data.Directory.Management.TransportServer'; Name = $env:COMPUTERNAME; InternalTransportCertificateThumbprint = '' }
}
'@
New-ModuleManifest -Path (Join-Path -Path $module -ChildPath ($name + '.psd1')) -RootModule ($name + '.psm1') -FunctionsToExport $functions

$file = Join-Path -Path $env:RUNNER_TEMP -ChildPath 'exbe-exchange-standin.pssc'
New-PSSessionConfigurationFile -Path $file -SessionType 'RestrictedRemoteServer' -LanguageMode 'NoLanguage' -ModulesToImport $name -VisibleFunctions $functions
Register-PSSessionConfiguration -Name 'Microsoft.Exchange' -Path $file -Force | Out-Null
Write-Output ('session configuration Microsoft.Exchange registered: ' + ($functions -join ', '))
