package oauth

// Plain-language descriptions of each preset's common scopes, shown to
// people on the connect server's pages instead of raw scope strings. They
// paraphrase the provider's own scope documentation (the preset's DocsURL
// and the scope references below) in the second person, for someone who
// has never read it; a scope not listed is shown as it is. A configuration
// adds or overrides descriptions with scope_descriptions.

// scopeDescriptions are the descriptions of each preset, by preset name.
var scopeDescriptions = map[string]map[string]string{
	"asana":      asanaScopes,
	"atlassian":  atlassianScopes,
	"box":        boxScopes,
	"dropbox":    dropboxScopes,
	"figma":      figmaScopes,
	"github":     githubScopes,
	"google":     googleScopes,
	"hubspot":    hubspotScopes,
	"linear":     linearScopes,
	"microsoft":  microsoftScopes,
	"salesforce": salesforceScopes,
	"slack":      slackScopes,
	"zoom":       zoomScopes,
}

// init attaches the descriptions to the catalog's presets, so that the
// catalog's entries stay as they were written from the providers' OAuth
// documentation. TestScopeDescriptions checks that every name is a preset.
func init() {
	for i := range catalog {
		catalog[i].ScopeDescriptions = scopeDescriptions[catalog[i].Name]
	}
}

// asanaScopes: https://developers.asana.com/docs/oauth-scopes
var asanaScopes = map[string]string{
	"default":        "See and change everything you can in Asana",
	"openid":         "Confirm who you are",
	"email":          "See your email address",
	"profile":        "See your name and profile photo",
	"tasks:read":     "See your tasks",
	"tasks:write":    "Create and change tasks as you",
	"projects:read":  "See your projects",
	"projects:write": "Create and change projects as you",
	"users:read":     "See people in your workspaces",
}

// atlassianScopes: https://developer.atlassian.com/cloud/jira/platform/scopes-for-oauth-2-3LO-and-forge-apps/
var atlassianScopes = map[string]string{
	"offline_access":                "Stay connected when you are not signed in",
	"read:me":                       "See your Atlassian profile",
	"read:jira-work":                "See Jira projects, issues and comments",
	"write:jira-work":               "Create and edit Jira issues, comments and work logs as you",
	"read:jira-user":                "See people in Jira",
	"read:confluence-content.all":   "Read Confluence pages, blog posts and comments",
	"read:confluence-space.summary": "See Confluence spaces",
	"write:confluence-content":      "Create and edit Confluence pages and blog posts as you",
	"search:confluence":             "Search Confluence",
}

// boxScopes: https://developer.box.com/guides/api-calls/permissions-and-errors/scopes/
var boxScopes = map[string]string{
	"root_readonly":  "See and download all your files and folders",
	"root_readwrite": "See, upload, edit and delete all your files and folders",
	"manage_groups":  "Manage groups in your enterprise",
}

// dropboxScopes: https://developers.dropbox.com/oauth-guide
var dropboxScopes = map[string]string{
	"account_info.read":      "See your Dropbox account details",
	"files.metadata.read":    "See the names and details of your files and folders",
	"files.metadata.write":   "Rename, move and delete your files and folders",
	"files.content.read":     "Download and read your files",
	"files.content.write":    "Upload and change your files",
	"sharing.read":           "See what you share and who with",
	"sharing.write":          "Share your files and folders",
	"file_requests.read":     "See your file requests",
	"file_requests.write":    "Create and change file requests",
	"contacts.read":          "See your contacts",
	"contacts.write":         "Change your contacts",
	"team_info.read":         "See your team's details",
	"members.read":           "See your team's members",
	"files.permanent_delete": "Permanently delete your files",
}

// figmaScopes: https://www.figma.com/developers/api#authentication-scopes
var figmaScopes = map[string]string{
	"current_user:read":       "See your name, email address and profile picture",
	"file_content:read":       "Read the contents of your files",
	"file_metadata:read":      "See the names and details of your files",
	"file_comments:read":      "Read comments on your files",
	"file_comments:write":     "Comment on your files as you",
	"file_versions:read":      "See the version history of your files",
	"file_dev_resources:read": "See dev resources in your files",
	"projects:read":           "See your projects and the files in them",
	"files:read":              "See your files, comments and projects",
}

// githubScopes: https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/scopes-for-oauth-apps
var githubScopes = map[string]string{
	"repo":             "Read and change your public and private repositories: code, issues, pull requests and settings",
	"public_repo":      "Read and change your public repositories",
	"repo:status":      "Read and set commit statuses in your repositories",
	"read:org":         "See your organizations and teams",
	"read:user":        "See your GitHub profile",
	"user:email":       "See your email addresses",
	"user":             "See and change your GitHub profile",
	"gist":             "Create gists as you",
	"notifications":    "See your notifications and mark them read",
	"workflow":         "Change GitHub Actions workflows in your repositories",
	"read:discussion":  "Read team discussions",
	"write:discussion": "Take part in team discussions as you",
	"read:project":     "See your projects",
	"project":          "See and change your projects",
}

// googleScopes: https://developers.google.com/identity/protocols/oauth2/scopes
var googleScopes = map[string]string{
	"openid":  "Confirm who you are",
	"email":   "See your email address",
	"profile": "See your name and profile picture",
	"https://www.googleapis.com/auth/userinfo.email":        "See your email address",
	"https://www.googleapis.com/auth/userinfo.profile":      "See your name and profile picture",
	"https://www.googleapis.com/auth/drive.file":            "See and edit files this app created or you opened with it",
	"https://www.googleapis.com/auth/drive.readonly":        "See and download all your Google Drive files",
	"https://www.googleapis.com/auth/drive":                 "See, edit, create and delete all your Google Drive files",
	"https://www.googleapis.com/auth/gmail.readonly":        "Read your email and its settings",
	"https://www.googleapis.com/auth/gmail.send":            "Send email as you",
	"https://www.googleapis.com/auth/gmail.compose":         "Write drafts and send email as you",
	"https://www.googleapis.com/auth/gmail.modify":          "Read, write, send and file your email (not delete it for good)",
	"https://www.googleapis.com/auth/calendar.readonly":     "See your calendars and their events",
	"https://www.googleapis.com/auth/calendar.events":       "See and edit events on your calendars",
	"https://www.googleapis.com/auth/calendar":              "See, edit, share and delete your calendars",
	"https://www.googleapis.com/auth/spreadsheets.readonly": "See your Google Sheets",
	"https://www.googleapis.com/auth/spreadsheets":          "See, edit, create and delete your Google Sheets",
	"https://www.googleapis.com/auth/documents.readonly":    "See your Google Docs",
	"https://www.googleapis.com/auth/documents":             "See, edit, create and delete your Google Docs",
	"https://www.googleapis.com/auth/contacts.readonly":     "See your contacts",
	"https://www.googleapis.com/auth/tasks":                 "See and change your tasks",
}

// hubspotScopes: https://developers.hubspot.com/docs/api/scopes
var hubspotScopes = map[string]string{
	"oauth":                             "Confirm who you are",
	"crm.objects.contacts.read":         "See your CRM contacts",
	"crm.objects.contacts.write":        "Create and change CRM contacts",
	"crm.objects.companies.read":        "See your CRM companies",
	"crm.objects.companies.write":       "Create and change CRM companies",
	"crm.objects.deals.read":            "See your CRM deals",
	"crm.objects.deals.write":           "Create and change CRM deals",
	"crm.objects.owners.read":           "See who owns CRM records",
	"tickets":                           "See and change help desk tickets",
	"content":                           "See and change website pages, blog posts and emails",
	"forms":                             "See and change forms",
	"crm.objects.marketing_events.read": "See marketing events",
}

// linearScopes: https://developers.linear.app/docs/oauth/authentication
var linearScopes = map[string]string{
	"read":            "See your issues, projects, teams and comments",
	"write":           "Create and change issues, projects and comments as you",
	"issues:create":   "Create issues as you",
	"comments:create": "Comment on issues as you",
	"admin":           "Administer your Linear workspace",
}

// microsoftScopes: https://learn.microsoft.com/en-us/graph/permissions-reference
var microsoftScopes = map[string]string{
	"offline_access":      "Stay connected when you are not signed in",
	"openid":              "Confirm who you are",
	"email":               "See your email address",
	"profile":             "See your basic profile",
	"User.Read":           "Sign you in and read your profile",
	"User.ReadBasic.All":  "See the basic profiles of people in your organization",
	"Mail.Read":           "Read your mail",
	"Mail.ReadWrite":      "Read, change and delete your mail",
	"Mail.Send":           "Send mail as you",
	"Calendars.Read":      "See your calendars and events",
	"Calendars.ReadWrite": "See, create, change and delete events on your calendars",
	"Contacts.Read":       "See your contacts",
	"Files.Read":          "Read your OneDrive files",
	"Files.ReadWrite":     "Read, create, change and delete your OneDrive files",
	"Files.Read.All":      "Read all files you can open",
	"Files.ReadWrite.All": "Read, create, change and delete all files you can open",
	"Sites.Read.All":      "Read items in all SharePoint sites you can open",
	"Chat.Read":           "Read your Teams chats",
	"Chat.ReadWrite":      "Read your Teams chats and send messages in them as you",
	"ChannelMessage.Send": "Send Teams channel messages as you",
	"Tasks.ReadWrite":     "See and change your tasks",
	"Notes.ReadWrite":     "See and change your OneNote notebooks",
}

// salesforceScopes: https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_tokens_scopes.htm
var salesforceScopes = map[string]string{
	"api":            "See and change your Salesforce data",
	"refresh_token":  "Stay connected when you are not signed in",
	"offline_access": "Stay connected when you are not signed in",
	"id":             "See your Salesforce profile",
	"openid":         "Confirm who you are",
	"profile":        "See your basic profile",
	"email":          "See your email address",
	"chatter_api":    "Read Chatter and post in it as you",
	"full":           "Do anything you can do in Salesforce",
}

// slackScopes (user token scopes): https://api.slack.com/scopes
var slackScopes = map[string]string{
	"chat:write":         "Send messages as you",
	"channels:read":      "See the public channels in your workspace",
	"channels:history":   "Read messages in public channels you are in",
	"channels:write":     "Create and manage public channels as you",
	"groups:read":        "See the private channels you are in",
	"groups:history":     "Read messages in private channels you are in",
	"im:read":            "See your direct messages",
	"im:history":         "Read your direct messages",
	"im:write":           "Start direct messages as you",
	"mpim:read":          "See your group direct messages",
	"mpim:history":       "Read your group direct messages",
	"users:read":         "See people in your workspace",
	"users:read.email":   "See the email addresses of people in your workspace",
	"users.profile:read": "See profile details of people in your workspace",
	"files:read":         "See files shared in conversations you are in",
	"files:write":        "Upload, edit and delete files as you",
	"reactions:read":     "See emoji reactions",
	"reactions:write":    "Add and remove emoji reactions as you",
	"search:read":        "Search your workspace's messages and files",
	"reminders:write":    "Set reminders for you",
	"identity.basic":     "Confirm who you are",
}

// zoomScopes: https://developers.zoom.us/docs/integrations/oauth-scopes-overview/
var zoomScopes = map[string]string{
	"user:read:user":                            "See your Zoom profile",
	"meeting:read:list_meetings":                "See your meetings",
	"meeting:read:meeting":                      "See the details of your meetings",
	"meeting:write:meeting":                     "Schedule meetings as you",
	"meeting:update:meeting":                    "Change your meetings",
	"meeting:delete:meeting":                    "Delete your meetings",
	"cloud_recording:read:list_user_recordings": "See your cloud recordings",
}
