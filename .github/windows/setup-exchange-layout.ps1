<#
.SYNOPSIS
    Builds on a Windows Server runner the IIS layout of an Exchange server that exbe acts on, without Exchange.

.DESCRIPTION
    The shapes come from captures of real Exchange 2016/2019 servers (Get-WebBinding and applicationHost.config
    kept as Pester data in microsoft/CSS-Exchange, Diagnostics/HealthChecker/Tests/DataCollection/E19/Exchange/IIS;
    summarised in the project's shared real-server-shapes.md, section 1):

      Default Web Site    http  *:80:            (IIS's own)
      Default Web Site    https :443:            a certificate standing for the CA-issued front-end one
      Default Web Site    https 127.0.0.1:443:   the back-end certificate (as in both captures)
      Exchange Back End   http  *:81:
      Exchange Back End   https *:444:           the self-signed "Microsoft Exchange" certificate, key in a legacy CSP
      Exchange Back End   /owa                   Windows authentication only: an unauthenticated request gets 401

    The stand-in CA signs the front-end certificate; its public part goes to LocalMachine\Root and its key is deleted.
    The back-end certificate is self-signed with subject CN=<computer> and the computer's names, as Exchange setup
    makes it, and has a copy in LocalMachine\Root, as Exchange setup leaves it.
    Writes backend_thumbprint and frontend_thumbprint to $env:GITHUB_OUTPUT when it is set.
#>
[CmdletBinding()]
param(
    [string] $BackEndRoot = 'C:\inetpub\exbe-ci\ExchangeBackEnd'
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'

# IIS with its management scripts (the WebAdministration module exbe's scripts import) and Windows authentication.
$features = Install-WindowsFeature -Name 'Web-Server', 'Web-Windows-Auth', 'Web-Scripting-Tools'
if (-not $features.Success) {
    throw ('installing IIS failed: {0}' -f $features.ExitCode)
}
Import-Module -Name 'WebAdministration'

$computer = $env:COMPUTERNAME
$fqdn = [System.Net.Dns]::GetHostEntry($computer).HostName
$names = @($computer)
if ($fqdn -ne $computer) {
    $names += $fqdn  # a runner outside a domain may have no other name (-ne ignores case, as DNS does)
}
$store = 'Cert:\LocalMachine\My'

function Add-ExbeCiRootCopy {
    # The public part only, as Exchange setup and a CA's deployment put them in Root.
    param([Parameter(Mandatory = $true)] $Certificate)
    $public = [System.Security.Cryptography.X509Certificates.X509Certificate2]::new([byte[]]$Certificate.RawData)
    $root = [System.Security.Cryptography.X509Certificates.X509Store]::new('Root', 'LocalMachine')
    $root.Open('ReadWrite')
    try {
        $root.Add($public)
    } finally {
        $root.Close()
    }
}

function Get-ExbeCiBinding {
    param([Parameter(Mandatory = $true)] [string] $Site, [Parameter(Mandatory = $true)] [string] $Information)
    $found = @(Get-WebBinding -Name $Site -Protocol 'https' | Where-Object { $_.bindingInformation -ceq $Information })
    if ($found.Count -ne 1) {
        throw ('{0} has {1} https bindings {2}, expected one' -f $Site, $found.Count, $Information)
    }
    return $found[0]
}

# --- certificates -------------------------------------------------------------------------------------------------
$ca = New-SelfSignedCertificate -Subject 'CN=exbe CI stand-in CA' -FriendlyName 'exbe CI stand-in CA' `
    -KeyUsage 'CertSign', 'CRLSign', 'DigitalSignature' -TextExtension @('2.5.29.19={critical}{text}ca=1&pathlength=0') `
    -KeyLength 2048 -HashAlgorithm 'SHA256' -NotAfter (Get-Date).AddYears(2) -CertStoreLocation $store
$frontEnd = New-SelfSignedCertificate -Signer $ca -Subject ('CN=' + $fqdn) -DnsName (@($names) + 'localhost') `
    -FriendlyName 'exbe CI front end (stands for a CA-issued certificate)' -KeyLength 2048 -HashAlgorithm 'SHA256' `
    -NotAfter (Get-Date).AddYears(1) -CertStoreLocation $store
Add-ExbeCiRootCopy -Certificate $ca
Remove-Item -LiteralPath $ca.PSPath -DeleteKey  # nothing signs with it again

$backEnd = New-SelfSignedCertificate -Subject ('CN=' + $computer) -DnsName $names -FriendlyName 'Microsoft Exchange' `
    -Provider 'Microsoft RSA SChannel Cryptographic Provider' -KeySpec 'KeyExchange' -KeyLength 2048 `
    -HashAlgorithm 'SHA256' -KeyExportPolicy 'Exportable' -NotAfter (Get-Date).AddYears(5) -CertStoreLocation $store
Add-ExbeCiRootCopy -Certificate $backEnd

# --- Default Web Site: :443: (empty address, as both captures spell it) and 127.0.0.1:443: ----------------------
Add-WebConfigurationProperty -PSPath 'MACHINE/WEBROOT/APPHOST' -Filter "system.applicationHost/sites/site[@name='Default Web Site']/bindings" `
    -Name '.' -Value @{ protocol = 'https'; bindingInformation = ':443:' }
(Get-ExbeCiBinding -Site 'Default Web Site' -Information ':443:').AddSslCertificate($frontEnd.Thumbprint, 'my')
New-WebBinding -Name 'Default Web Site' -Protocol 'https' -IPAddress '127.0.0.1' -Port 443
(Get-ExbeCiBinding -Site 'Default Web Site' -Information '127.0.0.1:443:').AddSslCertificate($backEnd.Thumbprint, 'my')

# --- Exchange Back End (site id 2 in both captures): http *:81:, https *:444:, /owa behind Windows auth ----------
$owaPath = Join-Path -Path $BackEndRoot -ChildPath 'owa'
New-Item -ItemType Directory -Path $owaPath -Force | Out-Null
Set-Content -LiteralPath (Join-Path -Path $owaPath -ChildPath 'default.htm') -Value 'exbe CI back end' -Encoding Ascii
New-Website -Name 'Exchange Back End' -Id 2 -Port 81 -IPAddress '*' -PhysicalPath $BackEndRoot | Out-Null
New-WebBinding -Name 'Exchange Back End' -Protocol 'https' -IPAddress '*' -Port 444
(Get-ExbeCiBinding -Site 'Exchange Back End' -Information '*:444:').AddSslCertificate($backEnd.Thumbprint, 'my')
New-WebApplication -Site 'Exchange Back End' -Name 'owa' -PhysicalPath $owaPath | Out-Null
$auth = 'system.webServer/security/authentication'
Set-WebConfigurationProperty -PSPath 'MACHINE/WEBROOT/APPHOST' -Location 'Exchange Back End/owa' -Filter "$auth/anonymousAuthentication" -Name 'enabled' -Value $false
Set-WebConfigurationProperty -PSPath 'MACHINE/WEBROOT/APPHOST' -Location 'Exchange Back End/owa' -Filter "$auth/windowsAuthentication" -Name 'enabled' -Value $true
Start-Website -Name 'Exchange Back End'

# --- what the job can see: the bindings as Get-WebBinding gives them, and http.sys's certificates ---------------
Get-WebBinding | Format-Table -AutoSize -Property ItemXPath, protocol, bindingInformation, certificateHash, certificateStoreName | Out-String -Width 250
netsh.exe http show sslcert
$status = $null
try {
    $request = [System.Net.HttpWebRequest]::Create('http://localhost:81/owa/')
    $request.GetResponse().Close()
} catch [System.Net.WebException] {
    $status = [int]$_.Exception.Response.StatusCode
}
if ($status -ne 401) {
    throw ('the back-end virtual directory answered {0} to an unauthenticated request, not 401' -f $status)
}
Write-Output ('back end {0}, front end {1}; /owa answers 401 without credentials' -f $backEnd.Thumbprint, $frontEnd.Thumbprint)
if ($env:GITHUB_OUTPUT) {
    Add-Content -LiteralPath $env:GITHUB_OUTPUT -Value ('backend_thumbprint=' + $backEnd.Thumbprint) -Encoding Ascii
    Add-Content -LiteralPath $env:GITHUB_OUTPUT -Value ('frontend_thumbprint=' + $frontEnd.Thumbprint) -Encoding Ascii
}
