package connect_test

import (
	"fmt"

	"github.com/onbehalf-dev/onbehalf/connect"
)

// The orchestrator mints a connect link (connect.MintLink) and shows the
// person this URL.
func ExampleLinkURL() {
	fmt.Println(connect.LinkURL("https://connect.example.com", "slack", "eyJhbGciOiJFZERTQSJ9.e30.c2ln"))
	// Output: https://connect.example.com/connect/slack?link=eyJhbGciOiJFZERTQSJ9.e30.c2ln
}

// A deployment's connect section: links from the orchestrator, sign-in
// with the company IdP, and the admin API.
func ExampleConfig_Validate() {
	c := connect.DefaultConfig()
	c.ExternalURL = "https://connect.example.com"
	c.Links.Issuers = []string{"https://orchestrator.example.com"}
	c.Links.JWKSURL = "https://orchestrator.example.com/.well-known/jwks.json"
	c.OIDC.Issuer = "https://login.example.com"
	c.OIDC.ClientID = "onbehalf-connect"
	c.OIDC.ClientSecretFile = "/run/secrets/oidc-client-secret"
	fmt.Println(c.Validate())
	c.ExternalURL = "http://connect.example.com"
	fmt.Println(c.Validate())
	// Output:
	// <nil>
	// external_url: must be https (http is allowed only on loopback addresses)
}
