<#
.SYNOPSIS
    Registers a PowerShell session configuration named Microsoft.Exchange on the runner's WinRM, shaped like
    Exchange's own /PowerShell endpoint, so the job sees what Windows PowerShell sends to pypsrp there.

.DESCRIPTION
    The shape follows how Exchange builds its endpoint's runspace (the project's shared real-server-shapes.md,
    section 4, read from a decompiled Exchange 15 session builder): InitialSessionState.CreateDefault() - here
    -SessionType Default -, every built-in command private except Out-Default, Get-FormatData, Select-Object,
    Measure-Object and Exit-PSSession, the Exchange cmdlets added, and no language (-LanguageMode NoLanguage).
    It is NOT a RestrictedRemoteServer session: there Select-Object is a proxy whose -Property accepts 11 fixed
    names and refuses the projection Exchange allows.

    The "Exchange cmdlets" are functions of a module named like the ones exbe calls. Get-ExchangeCertificate returns
    the real X509Certificate2 objects of LocalMachine\My with Exchange's type name put first (ExchangeCertificate
    derives from X509Certificate2; exbe tells objects apart by their type names) and a Services note property of an
    AllowedServices flags enum (the type Exchange's Services has), None for every certificate: how PowerShell
    serializes them and their Select-Object projection is the point. The other answers are property bags with the
    documented names; Get-ExchangeServer reports the build of the captured Exchange 2016 server (15.1.2375.7, before
    serialization signing existed). This is not Exchange, and says nothing of Exchange's own serializer.
#>
[CmdletBinding()]
param()

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$name = 'ExbeExchangeStandIn'
$functions = @('Get-ExchangeServer', 'Get-ExchangeCertificate', 'Get-AuthConfig', 'Get-SettingOverride', 'Get-TransportService')
$builtins = @('Out-Default', 'Get-FormatData', 'Select-Object', 'Measure-Object', 'Exit-PSSession')
$module = Join-Path -Path $env:ProgramFiles -ChildPath ('WindowsPowerShell\Modules\' + $name)
New-Item -ItemType Directory -Path $module -Force | Out-Null
Set-Content -LiteralPath (Join-Path -Path $module -ChildPath ($name + '.psm1')) -Encoding Ascii -Value @'
if (-not ('Microsoft.Exchange.Management.SystemConfigurationTasks.AllowedServices' -as [type])) {
    Add-Type -TypeDefinition @"
namespace Microsoft.Exchange.Management.SystemConfigurationTasks {
    [System.Flags]
    public enum AllowedServices { None = 0, IMAP = 1, POP = 2, UM = 4, IIS = 8, SMTP = 16, Federation = 32, UMCallRouter = 64 }
}
"@
}

function Get-ExchangeServer {
    [CmdletBinding()]
    param($Identity, $DomainController)
    $network = [System.Net.NetworkInformation.IPGlobalProperties]::GetIPGlobalProperties()
    $fqdn = $network.HostName
    if ($network.DomainName) {
        $fqdn = $network.HostName + '.' + $network.DomainName
    }
    [pscustomobject]@{ PSTypeName = 'Microsoft.Exchange.Data.Directory.Management.ExchangeServer'; Name = $env:COMPUTERNAME; Fqdn = $fqdn; AdminDisplayVersion = 'Version 15.1 (Build 2375.7)'; Edition = 'Standard' }
}

function Get-ExchangeCertificate {
    [CmdletBinding()]
    param($Identity, $Server, $Thumbprint, $DomainController)
    foreach ($certificate in @(Get-ChildItem -Path 'Cert:\LocalMachine\My')) {
        if ($Thumbprint -and $certificate.Thumbprint -ne $Thumbprint) {
            continue
        }
        $certificate.PSObject.TypeNames.Insert(0, 'Microsoft.Exchange.Management.SystemConfigurationTasks.ExchangeCertificate')
        $none = [Microsoft.Exchange.Management.SystemConfigurationTasks.AllowedServices]::None
        $certificate | Add-Member -MemberType NoteProperty -Name Services -Value $none -Force
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
New-PSSessionConfigurationFile -Path $file -SessionType 'Default' -LanguageMode 'NoLanguage' -ModulesToImport $name -VisibleFunctions $functions -VisibleCmdlets $builtins
if (-not (Test-PSSessionConfigurationFile -Path $file)) {
    throw ('the session configuration file is not valid: ' + $file)
}
Register-PSSessionConfiguration -Name 'Microsoft.Exchange' -Path $file -Force | Out-Null
Write-Output ('session configuration Microsoft.Exchange registered (Default session type, NoLanguage): ' + (($functions + $builtins) -join ', ') + ' visible')
