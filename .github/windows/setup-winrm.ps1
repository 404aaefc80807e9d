<#
.SYNOPSIS
    WinRM on the runner as exbe meets it on an Exchange server: HTTP with Negotiate/NTLM and message encryption
    (AllowUnencrypted stays false), HTTPS with a self-signed listener certificate, and a local administrator whose
    password is generated here, in the job.

.DESCRIPTION
    The password never exists in the repository: it is drawn from the system's CSPRNG, masked in the job's log
    (::add-mask::) before anything could print it, and handed to later steps through $env:GITHUB_ENV as
    EXBE_CI_PASSWORD (with EXBE_CI_USERNAME, COMPUTER\user). The listener certificate's public part is written
    as PEM to -CaFile, for exbe's ca_file.
    As in pypsrp's CI (build_helpers/win-setup.ps1), LocalAccountTokenFilterPolicy lets a local administrator
    other than the built-in one have an administrator's token over the network (UAC remote restrictions).
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)] [string] $UserName,
    [Parameter(Mandatory = $true)] [string] $CaFile
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

# 24 random bytes as base64, plus one character of each class Windows' complexity rule counts.
$bytes = [byte[]]::new(24)
$random = [System.Security.Cryptography.RandomNumberGenerator]::Create()
$random.GetBytes($bytes)
$random.Dispose()
$password = [System.Convert]::ToBase64String($bytes) + 'aZ7!'
Write-Output ('::add-mask::' + $password)
Add-Content -LiteralPath $env:GITHUB_ENV -Value ('EXBE_CI_PASSWORD=' + $password) -Encoding Ascii
Add-Content -LiteralPath $env:GITHUB_ENV -Value ('EXBE_CI_USERNAME=' + $env:COMPUTERNAME + '\' + $UserName) -Encoding Ascii

$secure = ConvertTo-SecureString -String $password -AsPlainText -Force
New-LocalUser -Name $UserName -Password $secure -PasswordNeverExpires -AccountNeverExpires -Description 'exbe CI: WinRM account' | Out-Null
Add-LocalGroupMember -Group 'Administrators' -Member $UserName
New-ItemProperty -Path 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Policies\System' -Name 'LocalAccountTokenFilterPolicy' `
    -Value 1 -PropertyType 'DWord' -Force | Out-Null

Enable-PSRemoting -Force -SkipNetworkProfileCheck | Out-Null
Set-Item -Path 'WSMan:\localhost\Service\AllowUnencrypted' -Value $false
Set-Item -Path 'WSMan:\localhost\Service\Auth\Negotiate' -Value $true
Set-Item -Path 'WSMan:\localhost\Service\Auth\Basic' -Value $false

$listenerCert = New-SelfSignedCertificate -Subject 'CN=localhost' -DnsName 'localhost', $env:COMPUTERNAME `
    -FriendlyName 'exbe CI WinRM listener' -KeyLength 2048 -HashAlgorithm 'SHA256' -NotAfter (Get-Date).AddDays(7) `
    -CertStoreLocation 'Cert:\LocalMachine\My'
foreach ($listener in @(Get-ChildItem -LiteralPath 'WSMan:\localhost\Listener')) {
    $keys = @($listener.Keys)
    if ($keys -contains 'Transport=HTTPS') {
        Remove-Item -LiteralPath $listener.PSPath -Recurse -Force
    }
}
New-WSManInstance -ResourceURI 'winrm/config/Listener' -SelectorSet @{ Transport = 'HTTPS'; Address = '*' } `
    -ValueSet @{ CertificateThumbprint = $listenerCert.Thumbprint; Enabled = $true } | Out-Null
Restart-Service -Name 'WinRM'

# PEM: base64 in lines of 64 characters between the markers
$base64 = [System.Convert]::ToBase64String($listenerCert.RawData)
$lines = for ($at = 0; $at -lt $base64.Length; $at += 64) { $base64.Substring($at, [System.Math]::Min(64, $base64.Length - $at)) }
$pem = @('-----BEGIN CERTIFICATE-----') + @($lines) + @('-----END CERTIFICATE-----')
Set-Content -LiteralPath $CaFile -Value $pem -Encoding Ascii

Get-ChildItem -LiteralPath 'WSMan:\localhost\Listener' | ForEach-Object { Get-ChildItem -LiteralPath $_.PSPath } | Format-Table -AutoSize -Property Name, Value | Out-String -Width 200
Write-Output ('WinRM: HTTP 5985 (Negotiate, encrypted messages) and HTTPS 5986 (listener {0}); account {1}' -f $listenerCert.Thumbprint, $UserName)
