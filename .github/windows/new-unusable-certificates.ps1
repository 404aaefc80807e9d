<#
.SYNOPSIS
    Puts two certificates into LocalMachine\My that must never be bound: one without a private key, and one whose
    legacy-CSP key file is gone (HasPrivateKey still says true; opening the key fails with "Keyset does not exist",
    what IIS reports as 0x80070520 when it is bound anyway).

.DESCRIPTION
    Subject CN=<computer> like the back-end certificate, a friendly name of their own (so exbe never takes them for
    a back-end candidate). Writes their thumbprints, comma-separated, as `unusable` to $env:GITHUB_OUTPUT.
#>
[CmdletBinding()]
param()

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$store = 'Cert:\LocalMachine\My'
$common = @{
    Subject = 'CN=' + $env:COMPUTERNAME
    DnsName = $env:COMPUTERNAME
    Provider = 'Microsoft RSA SChannel Cryptographic Provider'
    KeySpec = 'KeyExchange'
    KeyLength = 2048
    HashAlgorithm = 'SHA256'
    CertStoreLocation = $store
}

# 1. no private key: the public part of a certificate whose key pair was deleted, imported on its own
$keyless = New-SelfSignedCertificate @common -FriendlyName 'exbe CI: no private key'
$cer = Join-Path -Path $env:RUNNER_TEMP -ChildPath 'exbe-ci-keyless.cer'
[System.IO.File]::WriteAllBytes($cer, $keyless.RawData)
Remove-Item -LiteralPath $keyless.PSPath -DeleteKey
$imported = Import-Certificate -FilePath $cer -CertStoreLocation $store
if ($imported.HasPrivateKey) {
    throw 'the imported certificate has a private key'
}

# 2. a key that cannot be opened: the certificate still points at its CSP container, whose file is deleted
$broken = New-SelfSignedCertificate @common -FriendlyName 'exbe CI: key file deleted'
$container = $broken.PrivateKey.CspKeyContainerInfo.UniqueKeyContainerName
Remove-Item -LiteralPath (Join-Path -Path $env:ProgramData -ChildPath ('Microsoft\Crypto\RSA\MachineKeys\' + $container))
$reread = Get-Item -LiteralPath ('Cert:\LocalMachine\My\' + $broken.Thumbprint)
if (-not $reread.HasPrivateKey) {
    throw 'the certificate with the deleted key file no longer says it has a private key'
}

$thumbprints = @($imported.Thumbprint, $broken.Thumbprint) -join ','
Write-Output ('certificates without a usable key: ' + $thumbprints)
Add-Content -LiteralPath $env:GITHUB_OUTPUT -Value ('unusable=' + $thumbprints) -Encoding Ascii
